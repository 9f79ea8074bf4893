"""Process trees from /proc: a server's worker processes, their CPU time and memory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (forked by any of its threads)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now (``pid`` first); empty if it is gone."""
    if not Path(f"/proc/{pid}").exists():
        return []
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children(current)
    return out


def workers(pids: Iterable[int]) -> list[int]:
    """Of ``pids``, the worker processes that multiprocessing spawned (not its resource
    tracker, not the supervisor)."""
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(b"spawn_main" in arg for arg in argv):
                found.append(pid)
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of ``pids``, and of their children already reaped."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime (fields 14-17 of proc(5), counted from state=3)
            total += sum(int(x) for x in fields[11:15]) * TICK_S
    return total


def status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict (empty if the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def memory_kib(pids: Iterable[int]) -> dict[str, int | None]:
    """Peak (VmHWM) and current (VmRSS) resident memory, summed over ``pids``."""
    hwm: int | None = None
    rss: int | None = None
    for pid in pids:
        found = status(pid)
        if "VmHWM" in found:
            hwm = (hwm or 0) + int(found["VmHWM"].split()[0])
        if "VmRSS" in found:
            rss = (rss or 0) + int(found["VmRSS"].split()[0])
    return {"vm_hwm_kib": hwm, "vm_rss_kib": rss}
