"""Benchmark the gateway: SCIM against scim2-server, then the messaging webhooks and Teams
presence; write docs/benchmarks.md.

Usage: python bench/run.py [--users N] [--workers 1,2] [--databases sqlite,postgresql] ...

One run measures every gateway configuration asked for (SQLite and PostgreSQL, 1 and 2
worker processes), then the peer; on SQLite it also runs the lock-hold experiment. Then
``bench/webhooks.py`` (webhooks against a bare Starlette limit, the write alone, the
outbox) and ``bench/presence.py`` (ingest, latency, sync all against its own work) add
their sections to the same file. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from configs import DATABASES, Postgres, bench_gateway, configurations, postgres_version
from lock_hold import LockResult
from lock_report import markdown as lock_markdown
from lock_report import summarize
from machine import machine_info
from paging import section
from report import (
    GATEWAY,
    PEER,
    ServerRun,
    gateway_goals,
    goals_table,
    markdown,
    results_table,
)
from servers import start_peer
from steps import bench_server, log
from wrk_runner import LoadSettings, wrk_version

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
# Options that choose where results go, not what is measured: name -> takes a value.
OUTPUT_OPTIONS = {"--docs": True, "--json": True, "--no-docs": False, "--keep": False}
# How the peer is served: as the gateway's `serve` does (uvicorn, in-process, one worker).
UVICORN_LOOP = "auto"
UVICORN_HTTP = "auto"


def uvicorn_choice(loop: str, http: str) -> str:
    """The uvicorn loop and HTTP implementations, with what ``auto`` resolves to here."""
    if loop == "auto":
        loop = f"auto: {'uvloop' if find_spec('uvloop') else 'asyncio'}"
    if http == "auto":
        http = f"auto: {'httptools' if find_spec('httptools') else 'h11'}"
    return f"loop {loop}, http {http}"


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark cloudlink-gateway against scim2-server with wrk.",
    )
    add = parser.add_argument
    add("--users", type=int, default=100_000, help="users to seed (100,000)")
    add(
        "--small-users",
        type=int,
        default=1_000,
        help="measure lookups at this size first, for the lookup cost ratio (1,000; 0: skip)",
    )
    add("--servers", default="gateway,peer", help="servers to run: gateway, peer (both)")
    add("--workers", default="1,2", help="gateway worker processes to measure (1,2)")
    add(
        "--databases",
        default="sqlite,postgresql",
        help="gateway databases to measure: sqlite, postgresql (both)",
    )
    add("--pg-version", help="PostgreSQL major version for the throwaway cluster (newest)")
    add(
        "--lock-hold",
        type=float,
        default=10.0,
        help="seconds another process holds SQLite's write lock in the lock-hold "
        "experiment (10; 0: skip it)",
    )
    add(
        "--lock-timeout",
        type=float,
        default=2.0,
        help="GATEWAY_DATABASE_LOCK_TIMEOUT during the lock-hold experiment (2)",
    )
    add(
        "--paging-users",
        type=int,
        default=1_000_000,
        help="also time paging and lookups at this many users copied by SQL, against "
        "--small-users (bench/paging.py; 1,000,000; 0: skip)",
    )
    add("--duration", type=int, default=15, help="seconds measured per test")
    add("--warmup", type=int, default=3, help="seconds of warm-up per test")
    add("--threads", type=int, default=2, help="wrk threads")
    add("--connections", type=int, default=16, help="wrk connections")
    add("--seed-concurrency", type=int, default=32, help="concurrent seed POSTs")
    add("--seed-timeout", type=float, default=3600.0, help="give up seeding after this many s")
    add(
        "--idle-wait",
        type=float,
        default=60.0,
        help="before each test, wait up to this many s for other processes to go idle (60)",
    )
    add(
        "--retries",
        type=int,
        default=1,
        help="measure a test again, up to this many times, while other processes disturb it",
    )
    add("--peer-loop", default=UVICORN_LOOP, help="uvicorn loop for the peer (as the gateway)")
    add("--peer-http", default=UVICORN_HTTP, help="uvicorn http for the peer (as the gateway)")
    add(
        "--docs",
        type=Path,
        default=DOCS,
        help="Markdown file to write (docs/benchmarks.md); only after a run without errors "
        "of the peer and the gateway",
    )
    add("--no-docs", action="store_true", help="do not write the docs")
    add(
        "--then",
        default="webhooks,presence",
        help="benchmarks run after the SCIM one, each adding its section (webhooks,presence; "
        "none: skip)",
    )
    add("--json", type=Path, help="also write the raw results to this file")
    add("--keep", action="store_true", help="keep the temporary dir (data and server logs)")
    args = parser.parse_args(argv)
    args.servers = _list(args.servers)
    unknown = set(args.servers) - {"gateway", "peer"}
    if unknown or not args.servers:
        parser.error(f"--servers takes gateway and/or peer, not {', '.join(unknown) or 'nothing'}")
    args.databases = _list(args.databases)
    unknown = set(args.databases) - set(DATABASES)
    if unknown or not args.databases:
        parser.error(
            f"--databases takes sqlite and/or postgresql, not {', '.join(unknown) or 'nothing'}"
        )
    try:
        args.workers = [int(w) for w in _list(args.workers)]
    except ValueError:
        parser.error("--workers takes numbers, e.g. 1,2")
    if not args.workers or not all(1 <= w <= 64 for w in args.workers):
        parser.error("--workers takes numbers from 1 to 64, e.g. 1,2")
    if args.users < 1 or args.small_users < 0:
        parser.error("--users must be positive and --small-users not negative")
    if not 0 <= args.retries <= 8:
        parser.error("--retries must be between 0 and 8")
    unknown = set(_list(args.then)) - {"webhooks", "presence", "none"}
    if unknown:
        parser.error(f"--then takes webhooks and/or presence, or none; not {', '.join(unknown)}")
    if args.lock_hold < 0 or args.lock_timeout <= 0:
        parser.error("--lock-hold must not be negative and --lock-timeout must be positive")
    if 0 < args.lock_hold <= args.lock_timeout:
        parser.error("--lock-hold must be longer than --lock-timeout")
    return args


def harness_command(argv: list[str]) -> str:
    """The command line as recorded in the docs: without the options that only pick outputs."""
    shown: list[str] = []
    skip_value = False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip_value:
            skip_value = False
        elif name in OUTPUT_OPTIONS:
            skip_value = OUTPUT_OPTIONS[name] and "=" not in arg
        else:
            shown.append(arg)
    return shlex.join(["python", "bench/run.py", *shown])


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up, so that the cleanup finishes."""
    previous = (
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    settings = LoadSettings(
        threads=args.threads,
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    configs = configurations(args)
    uses_postgres = any(c.database == "postgresql" for c in configs)
    machine = machine_info(
        wrk_version(), postgres_version(args.pg_version) if uses_postgres else None
    )
    harness = harness_command(argv if argv is not None else sys.argv[1:])
    runs: list[ServerRun] = []
    locks: list[LockResult] = []
    workdir = Path(tempfile.mkdtemp(prefix="cloudlink-bench-"))
    postgres = Postgres(args.pg_version)
    paging = ""
    try:
        for config in configs:
            run, lock = bench_gateway(config, workdir, postgres, args, settings)
            runs.append(run)
            locks += [lock] if lock is not None else []
        if "peer" in args.servers:
            runs.append(
                bench_server(
                    PEER,
                    PEER,
                    lambda: start_peer(workdir, loop=args.peer_loop, http=args.peer_http),
                    args,
                    settings,
                )
            )
        paging = (
            section(
                args.small_users or 1_000,
                args.paging_users,
                repeat=200,
                databases=tuple(args.databases),
            )
            if args.paging_users
            else ""
        )
    finally:
        with shielded():
            postgres.close()
            if args.keep:
                log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(results_table(runs))
    print()
    print(goals_table(gateway_goals(runs)))
    if locks:
        print()
        print(lock_markdown(locks))
    if paging:
        print()
        print(paging)
    if args.json:
        args.json.write_text(json.dumps(to_json(machine, runs, locks), indent=2, default=str))
    failed = any(r.error for r in runs) or any(lock.error for lock in locks)
    complete = any(r.name == PEER for r in runs) and any(r.name == GATEWAY for r in runs)
    if not args.no_docs and complete and not failed:
        args.docs.write_text(
            markdown(
                runs,
                machine,
                settings,
                harness,
                uvicorn_choice(args.peer_loop, args.peer_http),
                args.seed_concurrency,
                extra_sections="\n".join(x for x in (paging, lock_markdown(locks)) if x),
            )
        )
        log(f"wrote {args.docs.relative_to(REPO) if args.docs.is_relative_to(REPO) else args.docs}")
    written = not args.no_docs and complete and not failed and args.docs == DOCS
    for name in [] if args.then == "none" else _list(args.then):
        # Each writes its own section of docs/benchmarks.md, after the SCIM run's file.
        command = [sys.executable, str(REPO / "bench" / f"{name}.py")]
        log(f"running {shlex.join(command[1:])}")
        finished = subprocess.run([*command, *([] if written else ["--no-docs"])], check=False)
        failed = failed or finished.returncode != 0
    return 1 if failed else 0


def to_json(
    machine: dict[str, str], runs: list[ServerRun], locks: list[LockResult]
) -> dict[str, object]:
    lock_data = []
    for lock in locks:
        summary = summarize(lock)
        lock_data.append(
            {
                "label": lock.label,
                "workers": lock.workers,
                "settings": dataclasses.asdict(lock.settings),
                "command": lock.command,
                "users_before": lock.users_before,
                "users_after": lock.users_after,
                "refused_stored": lock.refused_stored,
                "hold": dataclasses.asdict(lock.hold) if lock.hold else None,
                "summary": dataclasses.asdict(summary) if summary else None,
                "log_errors": lock.log_errors,
                "error": lock.error,
            }
        )
    return {"machine": machine, "runs": [r.to_json() for r in runs], "lock_hold": lock_data}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything it started was stopped")
        sys.exit(130)
