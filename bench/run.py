"""Benchmark the gateway's SCIM endpoints against scim2-server, and write docs/benchmarks.md.

Usage: python bench/run.py [--users N] [--small-users N] [--servers gateway,peer] ...

See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from report import (
    GATEWAY,
    PEER,
    Others,
    ServerRun,
    goals,
    goals_table,
    machine_info,
    markdown,
    results_table,
)
from seeding import SeedError, seed
from servers import Server, ServerError, start_gateway, start_peer
from wrk_runner import (
    DISTURBED_CPU_PCT,
    LoadSettings,
    WrkError,
    WrkResult,
    measure,
    wait_until_idle,
    wrk_version,
)

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
# A log line at the error level or above, in JSON, logfmt or Python's default formats.
ERROR_LINE = re.compile(
    r'"level":\s*"(?i:error|critical|exception)"|\blevel=(?i:error|critical)\b'
    r"|^(ERROR|CRITICAL)[: ]|^Traceback "
)
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark cloudlink-gateway against scim2-server with wrk.",
    )
    parser.add_argument("--users", type=int, default=100_000, help="users to seed (100,000)")
    parser.add_argument(
        "--small-users",
        type=int,
        default=1_000,
        help="measure lookups at this size first, for the lookup cost ratio (1,000; 0: skip)",
    )
    parser.add_argument(
        "--servers",
        default="gateway,peer",
        help="which servers to run, comma-separated: gateway, peer (both)",
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds measured per test")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per test")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--seed-concurrency", type=int, default=32, help="concurrent seed POSTs")
    parser.add_argument(
        "--seed-timeout", type=float, default=3600.0, help="give up seeding after this many s"
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="before each test, wait up to this many s for other processes to go idle (60)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="measure a test again, up to this many times, while other processes disturb it",
    )
    parser.add_argument(
        "--peer-loop", default=UVICORN_LOOP, help="uvicorn loop for the peer (as the gateway)"
    )
    parser.add_argument(
        "--peer-http", default=UVICORN_HTTP, help="uvicorn http for the peer (as the gateway)"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=DOCS,
        help="Markdown file to write (docs/benchmarks.md); only after a run of both servers",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not write the docs")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary dir (data and server logs)"
    )
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - {"gateway", "peer"}
    if unknown or not args.servers:
        parser.error(f"--servers takes gateway and/or peer, not {', '.join(unknown) or 'nothing'}")
    if args.users < 1 or args.small_users < 0:
        parser.error("--users must be positive and --small-users not negative")
    if not 0 <= args.retries <= 8:
        parser.error("--retries must be between 0 and 8")
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


def _measure(
    server: Server,
    script: str,
    script_args: Callable[[str, int], list[str]],
    secret_arg: int,
    settings: LoadSettings,
    args: argparse.Namespace,
) -> tuple[WrkResult, Others]:
    """Measure once, or again (up to ``--retries`` times) while other processes disturb it.

    ``script_args(phase, attempt)`` gives the script's arguments. Returns the least
    disturbed result, and the other runs: the warm-ups, then the discarded attempts.
    """
    results: list[WrkResult] = []
    warmups: list[WrkResult] = []
    for attempt in range(1, args.retries + 2):
        if args.idle_wait > 0:
            used = wait_until_idle(args.idle_wait, server.process.pid)
            if used >= DISTURBED_CPU_PCT:
                log(f"  other processes use {used:.0f}% of a CPU; measuring anyway")

        def phase_args(phase: str, attempt: int = attempt) -> list[str]:
            return script_args(phase, attempt)

        result, warmup = measure(
            server.users_url,
            script,
            phase_args,
            settings,
            secret_args=frozenset({secret_arg}),
            server_pid=server.process.pid,
        )
        results.append(result)
        warmups += [warmup] if warmup is not None else []
        if not result.disturbed:
            break
        if attempt <= args.retries:
            log(f"  disturbed ({_cpu(result)}): measuring again")
    best = min(results, key=lambda r: r.other_cpu_pct)
    return best, Others(warmups, [r for r in results if r is not best])


def _lookups(
    server: Server, users: int, settings: LoadSettings, args: argparse.Namespace
) -> tuple[WrkResult, Others]:
    result, others = _measure(
        server,
        "lookup.lua",
        lambda _phase, _attempt: [str(users), server.auth],
        1,
        settings,
        args,
    )
    log(
        f"  lookups at {users:,} users: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, bad {result.bad:,}; {_cpu(result)}"
    )
    return result, others


def _create_args(tag: str, server: Server) -> Callable[[str, int], list[str]]:
    """Arguments of create.lua: names and phone numbers apart for every run against a server.

    Phone numbers are +44<7 for a warm-up, 8 for a measured run><attempt><thread><counter>
    (E.164, 13 digits); the seeded users have +3361234....
    """

    def script_args(phase: str, attempt: int) -> list[str]:
        kind = 7 if phase == "warmup" else 8
        return [f"{tag}{phase[0]}{attempt}", f"44{kind}{attempt}", server.auth]

    return script_args


def _creates(
    server: Server, settings: LoadSettings, args: argparse.Namespace
) -> tuple[WrkResult, Others]:
    result, others = _measure(
        server,
        "create.lua",
        _create_args(uuid.uuid4().hex[:8], server),
        2,
        settings,
        args,
    )
    log(
        f"  creates: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, bad {result.bad:,}; {_cpu(result)}"
    )
    return result, others


def _cpu(result: WrkResult) -> str:
    return (
        f"CPU % server {result.server_cpu_pct:.0f}, wrk {result.wrk_cpu_pct:.0f}, "
        f"other {result.other_cpu_pct:.0f}"
    )


def _seed(server: Server, first: int, last: int, args: argparse.Namespace) -> float:
    log(f"  seeding users {first:,}..{last:,}")
    result = seed(
        server.users_url,
        server.headers,
        range(first, last + 1),
        concurrency=args.seed_concurrency,
        deadline_s=args.seed_timeout,
    )
    log(f"  seeded {result.created:,} users in {result.seconds:.1f} s ({result.rate:,.0f}/s)")
    return result.seconds


def bench_server(
    name: str,
    start: Callable[[], Server],
    args: argparse.Namespace,
    settings: LoadSettings,
) -> ServerRun:
    """Start a server, seed it, load it, read its memory, stop it."""
    log(f"{name}: starting")
    server = start()
    small = args.small_users if 0 < args.small_users < args.users else None
    run = ServerRun(
        name=name,
        command=server.command,
        auth="bearer token" if server.headers else "none",
        users=args.users,
        small_users=small,
    )
    try:
        seeded = 0
        if small is not None:
            run.seed_seconds += _seed(server, 1, small, args)
            run.lookup_small, others = _lookups(server, small, settings, args)
            run.add_others(others)
            seeded = small
        run.seed_seconds += _seed(server, seeded + 1, args.users, args)
        run.lookup, others = _lookups(server, args.users, settings, args)
        run.add_others(others)
        run.create, others = _creates(server, settings, args)
        run.add_others(others)
        run.memory_kib = server.memory_kib()
        run.children = server.children()
        hwm = run.memory_kib.get("vm_hwm_kib")
        log(f"  peak memory (VmHWM): {hwm / 1024:,.0f} MiB" if hwm else "  no VmHWM")
    except (SeedError, WrkError) as exc:
        run.error = str(exc)
        log(f"  FAILED: {exc}")
    finally:
        run.exit_code = server.stop()
        run.data_bytes = server.data_bytes()
        log(f"{name}: stopped (exit code {run.exit_code})")
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    run.log_lines = text.count("\n")
    run.log_errors = [line for line in text.splitlines() if ERROR_LINE.search(line)]
    if run.log_errors:
        log(f"  {len(run.log_errors):,} error lines in the log, first: {run.log_errors[0][:200]}")
    return run


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    settings = LoadSettings(
        threads=args.threads,
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    machine = machine_info(wrk_version())
    harness = harness_command(argv if argv is not None else sys.argv[1:])
    runs: list[ServerRun] = []
    workdir = Path(tempfile.mkdtemp(prefix="cloudlink-bench-"))
    try:
        starters: dict[str, tuple[str, Callable[[], Server]]] = {
            "gateway": (GATEWAY, lambda: start_gateway(workdir)),
            "peer": (
                PEER,
                lambda: start_peer(workdir, loop=args.peer_loop, http=args.peer_http),
            ),
        }
        for key in ("gateway", "peer"):
            if key in args.servers:
                name, start = starters[key]
                try:
                    runs.append(bench_server(name, start, args, settings))
                except ServerError as exc:
                    log(f"{name}: could not start: {exc}")
                    runs.append(
                        ServerRun(name=name, command="", auth="", users=args.users, error=str(exc))
                    )
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    by_name = {r.name: r for r in runs}
    print()
    print(results_table(runs))
    print()
    print(goals_table(goals(by_name.get(GATEWAY), by_name.get(PEER))))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "runs": [r.to_json() for r in runs]}, indent=2)
        )
    uvicorn_options = uvicorn_choice(args.peer_loop, args.peer_http)
    if not args.no_docs and len(runs) == 2 and not any(r.error for r in runs):
        args.docs.write_text(
            markdown(runs, machine, settings, harness, uvicorn_options, args.seed_concurrency)
        )
        log(f"wrote {args.docs.relative_to(REPO) if args.docs.is_relative_to(REPO) else args.docs}")
    failed = any(r.error for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; the servers were stopped")
        sys.exit(130)
