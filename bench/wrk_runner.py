"""Running wrk with the benchmark's Lua scripts, and reading its output."""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import procs

SCRIPTS = Path(__file__).resolve().parent / "wrk"
RESULT_PREFIX = "BENCH_RESULT "
# A run during which other processes used more than this share of one CPU is disturbed.
DISTURBED_CPU_PCT = 15.0


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass(frozen=True)
class LoadSettings:
    """The shape of one wrk run."""

    threads: int = 2
    connections: int = 16
    duration_s: int = 15
    warmup_s: int = 3
    timeout_s: int = 10  # wrk's per-request timeout


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    unexpected_status: int  # responses whose status was not the expected one
    wrong_body: int  # expected status, wrong content (e.g. a lookup that found nothing)
    non_2xx_3xx: int  # as wrk itself counts them
    socket_errors: dict[str, int]
    first_bad: str
    command: str  # the wrk command line, with the credentials left out
    # CPU use during the run, in % of one CPU: the server's, wrk's, and everything else's
    # (other processes on the machine; a high value means the run was disturbed).
    server_cpu_pct: float = 0.0
    database_cpu_pct: float = 0.0  # a database server's processes (PostgreSQL), if any
    wrk_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    # Requests each worker process answered during the run, most first (from the
    # gateway's access log; empty for a server that does not log its pid).
    worker_requests: tuple[int, ...] = ()

    @property
    def smallest_worker_share(self) -> float | None:
        """The least busy worker's share of the requests (None unless 2 or more answered)."""
        total = sum(self.worker_requests)
        if len(self.worker_requests) < 2 or total == 0:
            return None
        return self.worker_requests[-1] / total

    @property
    def disturbed(self) -> bool:
        """Whether other processes used enough CPU during the run to have slowed it."""
        return self.other_cpu_pct > DISTURBED_CPU_PCT

    @property
    def bad(self) -> int:
        """Every response or socket error that makes the run less than clean."""
        return self.unexpected_status + self.wrong_body + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "bad": self.bad, "disturbed": self.disturbed}


@dataclass(frozen=True)
class Watched:
    """The processes whose CPU use is measured apart: the server's, its database server's."""

    server: Callable[[], list[int]]
    database: Callable[[], list[int]] = list
    # The server's log, whose access lines name the worker (``"pid"``) that answered.
    log_path: Path | None = None


def _cpu_seconds(watched: Watched | None) -> tuple[float, float, float, float]:
    """CPU seconds so far: the machine's (user, nice, system), the server's, its database
    server's, and ours.

    "Ours" is this process and its reaped children (wrk, once it has exited).
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    machine = sum(int(x) for x in fields[1:4]) * procs.TICK_S
    server = procs.cpu_seconds(watched.server()) if watched else 0.0
    database = procs.cpu_seconds(watched.database()) if watched else 0.0
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        ours += usage.ru_utime + usage.ru_stime
    return machine, server, database, ours


def other_cpu_pct(watched: Watched | None, seconds: float = 1.0) -> float:
    """How much CPU other processes than ours and the watched ones use, in % of one CPU."""
    before = _cpu_seconds(watched)
    time.sleep(seconds)
    after = _cpu_seconds(watched)
    machine, server, database, ours = (b - a for a, b in zip(before, after, strict=True))
    return max(0.0, 100 * (machine - server - database - ours) / seconds)


def wait_until_idle(
    max_wait_s: float, watched: Watched, busy_pct: float = DISTURBED_CPU_PCT
) -> float:
    """Wait until other processes than the watched ones used under ``busy_pct`` of a CPU
    for 1 s.

    Gives up after ``max_wait_s``; returns the last second's use, in % of one CPU.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        used = other_cpu_pct(watched)
        if used < busy_pct or time.monotonic() >= deadline:
            return used


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (Debian: apt-get install -y wrk)")
    return path


def wrk_version() -> str:
    done = subprocess.run(
        [wrk_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def _parse(output: str, command: str) -> WrkResult:
    line = next((ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise WrkError(f"no result in wrk's output:\n{output}")
    data = json.loads(line.removeprefix(RESULT_PREFIX))
    latency = data["latency_us"]
    duration_s = data["duration_us"] / 1e6
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    errors = data["errors"]
    return WrkResult(
        requests=data["requests"],
        duration_s=duration_s,
        rps=data["requests"] / duration_s if duration_s > 0 else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        unexpected_status=data["unexpected_status"],
        wrong_body=data["wrong_body"],
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors={k: v for k, v in errors.items() if k != "status"},
        first_bad=data["first_bad"],
        command=command,
    )


def run_wrk(
    url: str,
    script: str,
    script_args: list[str],
    duration_s: int,
    settings: LoadSettings,
    *,
    secret_args: frozenset[int] = frozenset(),
    watched: Watched | None = None,
) -> tuple[WrkResult, str]:
    """Run ``wrk`` once against ``url`` with ``bench/wrk/<script>``; return the result and output.

    ``secret_args`` are the indexes of ``script_args`` left out of the recorded command.
    ``watched`` are the server's processes (and its database's), whose CPU use is measured
    apart.
    """
    argv = [
        wrk_binary(),
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{duration_s}s",
        f"--timeout={settings.timeout_s}s",
        "--latency",
        "-s",
        str(SCRIPTS / script),
        url,
        "--",
        *script_args,
    ]
    shown = [
        *(["wrk", *argv[1:7], f"bench/wrk/{script}", url, "--"]),
        *("<redacted>" if i in secret_args and a != "-" else a for i, a in enumerate(script_args)),
    ]
    command = shlex.join(shown)
    log_offset = _log_size(watched)
    before, started = _cpu_seconds(watched), time.monotonic()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish in time: {command}") from exc
    after, wall = _cpu_seconds(watched), time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {command}\n{output}")
    machine, server, database, ours = (b - a for a, b in zip(before, after, strict=True))
    result = _parse(output, command)
    result = dataclasses.replace(
        result,
        server_cpu_pct=100 * server / wall,
        database_cpu_pct=100 * database / wall,
        wrk_cpu_pct=100 * ours / wall,
        other_cpu_pct=max(0.0, 100 * (machine - server - database - ours) / wall),
        worker_requests=_worker_requests(watched, log_offset),
    )
    return result, output


_PID = re.compile(rb'"pid":\s*(\d+)')


def _log_size(watched: Watched | None) -> int:
    if watched is None or watched.log_path is None:
        return 0
    try:
        return watched.log_path.stat().st_size
    except OSError:
        return 0


def _worker_requests(watched: Watched | None, offset: int) -> tuple[int, ...]:
    """Access-log lines written since ``offset``, counted by the pid that wrote them;
    every worker alive is counted, one that answered nothing as 0."""
    if watched is None or watched.log_path is None:
        return ()
    counts: dict[int, int] = dict.fromkeys(procs.workers(watched.server()), 0)
    with watched.log_path.open("rb") as log:
        log.seek(offset)
        for line in log:
            found = _PID.search(line) if b'"gateway.access"' in line else None
            if found:
                pid = int(found.group(1))
                counts[pid] = counts.get(pid, 0) + 1
    if sum(counts.values()) == 0:
        return ()
    return tuple(sorted(counts.values(), reverse=True))


def measure(
    url: str,
    script: str,
    script_args: Callable[[str], list[str]],
    settings: LoadSettings,
    *,
    secret_args: frozenset[int] = frozenset(),
    watched: Watched | None = None,
) -> tuple[WrkResult, WrkResult | None]:
    """A warm-up run (unless its duration is 0), then the measured run.

    ``script_args`` gives the script's arguments for the phase, ``"warmup"`` or ``"run"``.
    """
    warmup = None
    if settings.warmup_s > 0:
        phase_args = script_args("warmup")
        warmup, _ = run_wrk(
            url,
            script,
            phase_args,
            settings.warmup_s,
            settings,
            secret_args=secret_args,
            watched=watched,
        )
    result, _ = run_wrk(
        url,
        script,
        script_args("run"),
        settings.duration_s,
        settings,
        secret_args=secret_args,
        watched=watched,
    )
    return result, warmup
