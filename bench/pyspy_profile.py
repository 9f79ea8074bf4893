"""Profile the gateway under create (or lookup) load with py-spy, and summarise where the time goes.

Usage: python bench/pyspy_profile.py [--load create|lookup] [--users N] [--duration S]
       [--rate HZ] [--markdown PATH]

Starts the gateway (SQLite, one worker, as ``bench/run.py`` does; or on the empty
PostgreSQL database of ``--database-url``) in a temporary dir, seeds it, measures wrk's
``create.lua`` (or ``lookup.lua``) load once without the profiler, then, under the same
load, records the server process twice with ``py-spy record --format raw --threads``:
with ``--gil`` (the thread holding the GIL: where the Python CPU time goes)
and without (every thread not waiting for work: wall time, fsync and GIL waits
included). Prints a Markdown section for docs/performance.md (see profile_summary.py).
Needs py-spy (``pip install py-spy``) and permission to ptrace the server (root, or
``kernel.yama.ptrace_scope=0``). Everything it starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from machine import commit
from profile_summary import (
    Profile,
    cumulative_times,
    function_table,
    parse_raw,
    parts_table,
    self_times,
    threads_line,
)
from seeding import SeedError, seed
from servers import Server, prepare_gateway, serve_gateway
from steps import log
from wrk_runner import LoadSettings, WrkError, WrkResult, run_wrk

MODES = {"gil": ["--gil"], "busy": []}


@dataclass(frozen=True)
class Recording:
    """How the profiles were taken, and what the load did meanwhile."""

    users: int
    duration_s: int
    rate: int
    backend: str  # "SQLite (`GATEWAY_SQLITE_SYNCHRONOUS=FULL`)" or "PostgreSQL"
    load: str  # "create" or "lookup"
    plain: WrkResult  # the load without the profiler
    profiled: WrkResult  # ... and while py-spy sampled
    py_spy_commands: list[str]


def markdown(gil: Profile, busy: Profile, rec: Recording, top: int) -> str:
    """The section for docs/performance.md."""
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    gil_held = 100 * gil.total / (rec.duration_s * rec.rate)
    idle = "; ".join(f"{reason}: {n:,}" for reason, n in busy.idle.most_common())
    commands = "\n".join(rec.py_spy_commands)
    return f"""## Profile of {rec.load}s, {today} (commit {commit()})

The gateway on {rec.backend}, one worker, {rec.users:,} users
seeded, under wrk's {rec.load} load: {rec.plain.rps:,.0f} {rec.load}s/s without the profiler,
{rec.profiled.rps:,.0f} while it sampled (py-spy stops the process for every sample).
py-spy recorded it twice, {rec.duration_s} s each at {rec.rate} Hz:

- **GIL held** (`--gil`): {gil.total:,} samples; the GIL was held {gil_held:.0f} % of the
  time. This is where the Python CPU time goes; the event loop and the sqlite-writer
  thread share it. By thread:
  {threads_line(gil)}.
- **busy threads** (without `--gil`): {busy.counted:,} samples of threads not waiting for
  work. Wall time: the COMMIT's fsync (GIL released) and waits *for* the GIL count here
  (a thread waiting for the GIL shows in the C call that released it, e.g. `os.urandom`
  in `uuid4`). By thread:
  {threads_line(busy)}.
  Set aside as waiting for work:
  {idle}.

Shares are of each recording's samples, all threads of the process together.

```sh
python bench/pyspy_profile.py --load {rec.load} --users {rec.users} \\
  --duration {rec.duration_s} --rate {rec.rate}
# which runs, against the gateway it started:
{rec.profiled.command}
{commands}
```

{parts_table(gil, busy)}

Rows overlap (a sample counts in every part one of its frames belongs to); the *(self)*
rows count only the samples whose innermost frame is in those files.

Top {top} functions by self time, GIL held:

{function_table(self_times(gil), gil, top)}

Top {top} functions by cumulative time, GIL held (without the entry points and the
request's middleware and routing chain; functions always on the stack together are
listed once, by the innermost):

{function_table(cumulative_times(gil), gil, top)}

Top {top} functions by self time, busy threads:

{function_table(self_times(busy), busy, top)}
"""


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/pyspy_profile.py",
        description="Profile the gateway (1 worker) under create or lookup load with py-spy.",
    )
    parser.add_argument(
        "--load", choices=("create", "lookup"), default="create", help="what wrk sends (create)"
    )
    parser.add_argument("--users", type=int, default=1_000, help="users to seed first (1,000)")
    parser.add_argument("--duration", type=int, default=20, help="seconds per recording (20)")
    parser.add_argument("--rate", type=int, default=100, help="samples per second (100)")
    parser.add_argument("--top", type=int, default=15, help="functions listed (15)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument(
        "--database-url",
        help="profile on this (empty) PostgreSQL database instead of the embedded SQLite",
    )
    parser.add_argument("--raw", type=Path, help="also keep py-spy's raw output: PATH.MODE.txt")
    parser.add_argument("--markdown", type=Path, help="also write the section to this file")
    return parser.parse_args(argv)


def _record(
    py_spy: str, server: Server, mode: str, args: argparse.Namespace, out: Path
) -> tuple[str, str]:
    """One py-spy recording of the server; returns its raw output and its command."""
    argv = [
        py_spy, "record", "--pid", str(server.process.pid), "--duration", str(args.duration),
        "--rate", str(args.rate), "--format", "raw", "--threads", *MODES[mode], "-o", str(out),
    ]  # fmt: skip
    shown = shlex.join(["py-spy", *argv[1:3], "PID", *argv[4:-1], f"profile-{mode}.txt"])
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=args.duration + 60, check=False
    )
    if done.returncode != 0 or not out.exists():
        raise WrkError(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return out.read_text(), shown


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    py_spy = _py_spy()
    workdir = Path(tempfile.mkdtemp(prefix="cloudlink-profile-"))
    settings = LoadSettings(connections=args.connections, duration_s=args.duration, warmup_s=0)
    server = None
    raw: dict[str, str] = {}
    shown: list[str] = []
    try:
        backend = "PostgreSQL" if args.database_url else "SQLite"
        log(f"gateway ({backend}, 1 worker): starting")
        setup = prepare_gateway(
            workdir / "gateway-data", database_url=args.database_url, shown_url="<given>"
        )
        server = serve_gateway(setup, workers=1, log_path=workdir / "gw.log")
        log(f"  seeding {args.users:,} users")
        seed(server.users_url, server.headers, range(1, args.users + 1))
        # Phone numbers +15<run><thread><counter> (see seeding.phone_number); 2: the token.
        secret = frozenset({2})
        url, auth = server.users_url, server.auth

        def load(tag: str, seconds: int) -> WrkResult:
            if args.load == "lookup":  # users 1..N, each looked up by its userName
                wrk_args, hidden = [str(args.users), auth], frozenset({1})
            else:
                wrk_args, hidden = [f"prof{tag}", f"15{tag}", auth], secret
            script = f"{args.load}.lua"
            return run_wrk(url, script, wrk_args, seconds, settings, secret_args=hidden)[0]

        load("0", 3)  # warm-up
        plain = load("1", args.duration)
        log(f"  without the profiler: {plain.rps:,.0f} {args.load}s/s")
        # The load runs a little longer than the recordings, so that every sample is under it.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            loaded = pool.submit(load, "2", len(MODES) * (args.duration + 2) + 2)
            time.sleep(1)
            for mode in MODES:
                log(f"  py-spy record ({mode}) for {args.duration} s")
                raw[mode], command = _record(py_spy, server, mode, args, workdir / f"{mode}.txt")
                shown.append(command)
            profiled = loaded.result()
        log(f"  while sampled: {profiled.rps:,.0f} {args.load}s/s")
    except (SeedError, WrkError, subprocess.SubprocessError, OSError) as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        if server is not None:
            server.stop()
            log("gateway: stopped")
        shutil.rmtree(workdir, ignore_errors=True)
    if args.raw:
        for mode, text in raw.items():
            args.raw.with_suffix(f".{mode}.txt").write_text(text)
    backend = "PostgreSQL" if args.database_url else "SQLite (`GATEWAY_SQLITE_SYNCHRONOUS=FULL`)"
    recording = Recording(
        args.users, args.duration, args.rate, backend, args.load, plain, profiled, shown
    )
    section = markdown(
        parse_raw(raw["gil"], drop_idle=False),
        parse_raw(raw["busy"], drop_idle=True),
        recording,
        args.top,
    )
    print(section)
    if args.markdown:
        args.markdown.write_text(section)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the gateway was stopped", file=sys.stderr)
        sys.exit(130)
