"""The steps of a server's benchmark: seeding, filter lookups and creates under wrk."""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from report import Others, ServerRun
from seeding import SeedError, seed
from servers import Server, ServerError
from wrk_runner import (
    DISTURBED_CPU_PCT,
    LoadSettings,
    Watched,
    WrkError,
    WrkResult,
    measure,
    wait_until_idle,
)

# A log line at the error level or above, in JSON, logfmt or Python's default formats.
ERROR_LINE = re.compile(
    r'"level":\s*"(?i:error|critical|exception)"|\blevel=(?i:error|critical)\b'
    r"|^(ERROR|CRITICAL)[: ]|^Traceback "
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _watched(server: Server) -> Watched:
    return Watched(server.pids, server.database_pids, server.log_path)


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
            used = wait_until_idle(args.idle_wait, _watched(server))
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
            watched=_watched(server),
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

    Phone numbers are +1<7 for a warm-up, 8 for a measured run><attempt><thread, 2 digits>
    <counter, 6 digits> (see ``seeding.phone_number``).
    """

    def script_args(phase: str, attempt: int) -> list[str]:
        kind = 7 if phase == "warmup" else 8
        return [f"{tag}{phase[0]}{attempt}", f"1{kind}{attempt}", server.auth]

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
    database = f"database {result.database_cpu_pct:.0f}, " if result.database_cpu_pct else ""
    total = sum(result.worker_requests)
    workers = (
        "; requests per worker " + " / ".join(f"{n / total:.0%}" for n in result.worker_requests)
        if len(result.worker_requests) > 1 and total
        else ""
    )
    return (
        f"CPU % server {result.server_cpu_pct:.0f}, {database}wrk {result.wrk_cpu_pct:.0f}, "
        f"other {result.other_cpu_pct:.0f}{workers}"
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
    started = time.monotonic()
    server.settle()
    if (settled := time.monotonic() - started) > 0.05:
        log(f"  database settled (VACUUM ANALYZE) in {settled:.1f} s")
    return result.seconds


def bench_server(
    name: str,
    label: str,
    start: Callable[[], Server],
    args: argparse.Namespace,
    settings: LoadSettings,
    *,
    database: str | None = None,
    workers: int = 1,
) -> ServerRun:
    """Start a server, seed it, load it, read its memory, stop it."""
    log(f"{label}: starting")
    run = ServerRun(
        name=name, label=label, command="", auth="", users=args.users, database=database,
        workers=workers,
    )  # fmt: skip
    try:
        server = start()
    except ServerError as exc:
        log(f"{label}: could not start: {exc}")
        run.error = str(exc)
        return run
    small = args.small_users if 0 < args.small_users < args.users else None
    run.command = server.command
    run.auth = "bearer token" if server.headers else "none"
    run.small_users = small
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
        log(f"{label}: stopped (exit code {run.exit_code})")
    run.log_lines, run.log_errors = read_log(server.log_path)
    if run.log_errors:
        log(f"  {len(run.log_errors):,} error lines in the log, first: {run.log_errors[0][:200]}")
    return run


def read_log(path: Path) -> tuple[int, list[str]]:
    """The number of lines of a server's log, and its error lines."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return text.count("\n"), [line for line in text.splitlines() if ERROR_LINE.search(line)]
