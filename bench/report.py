"""The results of a benchmark run: the machine, the table, the goals, docs/benchmarks.md."""

from __future__ import annotations

import datetime
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from wrk_runner import LoadSettings, WrkResult

GATEWAY = "cloudlink-gateway"
PEER = "scim2-server"


class Others(NamedTuple):
    """The runs of a test that are not its result."""

    warmups: list[WrkResult]
    discarded: list[WrkResult]


@dataclass
class ServerRun:
    """Everything measured on one server in one configuration."""

    name: str  # GATEWAY or PEER
    label: str  # the column heading: the server and its configuration
    command: str
    auth: str
    users: int
    database: str | None = None  # the gateway's: SQLite or PostgreSQL
    workers: int = 1
    small_users: int | None = None
    seed_seconds: float = 0.0  # seeding all users, summed over the steps
    lookup_small: WrkResult | None = None  # lookups with small_users seeded
    lookup: WrkResult | None = None  # lookups with all users seeded
    create: WrkResult | None = None
    warmups: list[WrkResult] = field(default_factory=list)
    discarded: list[WrkResult] = field(default_factory=list)  # runs disturbed, then repeated
    memory_kib: dict[str, int | None] = field(default_factory=dict)
    data_bytes: int | None = None  # data on disk after the run; None: kept in memory
    children: list[int] = field(default_factory=list)
    log_lines: int = 0
    log_errors: list[str] = field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None

    def add_others(self, others: Others) -> None:
        self.warmups += others.warmups
        self.discarded += others.discarded

    @property
    def seed_rate(self) -> float:
        return self.users / self.seed_seconds if self.seed_seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in ("lookup_small", "lookup", "create"):
            value = data[key]
            data[key] = value.to_json() if value is not None else None
        data["warmups"] = [w.to_json() for w in self.warmups]
        data["discarded"] = [w.to_json() for w in self.discarded]
        return data


# -- Goals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    text: str
    measured: str
    met: bool | None  # None: not measured, or not a pass/fail goal


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def goals(gateway: ServerRun | None, peer: ServerRun | None) -> list[Goal]:
    """The benchmark's goals for the gateway, met or missed."""
    lookup = gateway.lookup if gateway else None
    create = gateway.create if gateway else None
    small = gateway.lookup_small if gateway else None
    peer_lookup = peer.lookup if peer else None
    peer_create = peer.create if peer else None
    sizes = (
        f"{gateway.users:,} users within 1.2x of {gateway.small_users:,}"
        if gateway and gateway.small_users
        else "the full size within 1.2x of the small size"
    )
    specs: list[tuple[str, float | None, str, Callable[[float], bool]]] = [
        (
            "filter lookups >= 4,000 req/s",
            lookup.rps if lookup else None,
            "{:,.0f} req/s",
            lambda v: v >= 4000,
        ),
        (
            "filter lookups >= 5x the peer",
            _ratio(lookup.rps, peer_lookup.rps) if lookup and peer_lookup else None,
            "{:.2f}x",
            lambda v: v >= 5,
        ),
        (
            "filter lookups p99 < 25 ms",
            lookup.p99_ms if lookup else None,
            "{:.2f} ms",
            lambda v: v < 25,
        ),
        (
            "creates >= 1,500 req/s",
            create.rps if create else None,
            "{:,.0f} req/s",
            lambda v: v >= 1500,
        ),
        (
            "creates >= 2.5x the peer",
            _ratio(create.rps, peer_create.rps) if create and peer_create else None,
            "{:.2f}x",
            lambda v: v >= 2.5,
        ),
        (
            f"lookup cost at {sizes} (req/s ratio)",
            _ratio(small.rps, lookup.rps) if small and lookup else None,
            "{:.2f}x",
            lambda v: v <= 1.2,
        ),
    ]
    out = [
        Goal(text, fmt.format(value), ok(value))
        if value is not None
        else Goal(text, "not measured", None)
        for text, value, fmt, ok in specs
    ]
    measured = [r for r in (small, lookup, create) if r is not None]
    shares = [x for r in measured if (x := r.smallest_worker_share) is not None]
    out.append(
        Goal(
            "every worker >= 40% of the requests (2 workers, every run)",
            f"least busy worker {min(shares):.0%}" if shares else "not measured",
            min(shares) >= 0.4 if shares else None,
        )
    )
    bad = sum(r.bad for r in measured)
    out.append(
        Goal(
            "every measured gateway response as expected (status, body, no socket error)",
            f"{bad:,} unexpected" if measured else "not measured",
            bad == 0 if measured else None,
        )
    )
    hwm = gateway.memory_kib.get("vm_hwm_kib") if gateway else None
    users = f"{gateway.users:,}" if gateway else "all"
    out.append(
        Goal(
            f"peak memory (VmHWM, summed over its processes) with {users} users, after the load",
            f"{hwm / 1024:,.0f} MiB" if hwm else "not measured",
            None,
        )
    )
    return out


def _verdict(goal: Goal) -> str:
    if goal.met is None:
        return "reported" if goal.measured != "not measured" else "not measured"
    return "**met**" if goal.met else "**missed**"


# -- Tables -------------------------------------------------------------------------------


def _cell(result: WrkResult | None, what: str) -> str:
    if result is None:
        return "—"
    if what == "rps":
        return f"{result.rps:,.0f}"
    if what == "cpu":
        return (
            f"{result.server_cpu_pct:.0f} / {result.database_cpu_pct:.0f} / "
            f"{result.wrk_cpu_pct:.0f} / {result.other_cpu_pct:.0f}"
        )
    if what == "workers":
        total = sum(result.worker_requests)
        if len(result.worker_requests) < 2 or not total:
            return "—"
        return " / ".join(f"{n / total:.0%}" for n in result.worker_requests)
    if what == "bad":
        sockets = sum(result.socket_errors.values())
        return f"{result.unexpected_status:,} / {result.wrong_body:,} / {sockets:,}"
    return f"{getattr(result, what):.2f}"


def results_table(runs: list[ServerRun]) -> str:
    """The side-by-side results, one column per server."""
    header = "| | " + " | ".join(r.label for r in runs) + " |"
    lines = [header, "|---" * (len(runs) + 1) + "|"]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("database", [r.database or "in memory" for r in runs])
    row("worker processes", [str(r.workers) for r in runs])
    row("authentication", [r.auth for r in runs])
    row("users seeded", [f"{r.users:,}" for r in runs])
    row("seeding (POST, req/s)", [f"{r.seed_rate:,.0f}" for r in runs])
    for label, attr in (
        ("filter lookup", "lookup"),
        ("create (POST)", "create"),
    ):
        results = [getattr(r, attr) for r in runs]
        row(f"**{label}** req/s", [_cell(x, "rps") for x in results])
        row(f"{label} p50 ms", [_cell(x, "p50_ms") for x in results])
        row(f"{label} p99 ms", [_cell(x, "p99_ms") for x in results])
        row(f"{label} bad status / bad body / socket errors", [_cell(x, "bad") for x in results])
        row(f"{label} CPU % server / database / wrk / other", [_cell(x, "cpu") for x in results])
        row(f"{label} requests per worker", [_cell(x, "workers") for x in results])
    if any(r.lookup_small for r in runs):
        small = [r.lookup_small for r in runs]
        sizes = {r.small_users for r in runs if r.small_users}
        size = f"{next(iter(sizes)):,}" if len(sizes) == 1 else "small"
        row(f"filter lookup at {size} users req/s", [_cell(x, "rps") for x in small])
        row(f"filter lookup at {size} users p99 ms", [_cell(x, "p99_ms") for x in small])
        row(
            f"lookup req/s ratio {size} / {runs[0].users:,} users",
            [
                f"{x.rps / r.lookup.rps:.2f}x" if x and r.lookup and r.lookup.rps else "—"
                for x, r in zip(small, runs, strict=True)
            ],
        )
    row("log lines written", [f"{r.log_lines:,}" for r in runs])
    row(
        "data on disk (MiB)",
        [f"{r.data_bytes / 2**20:,.0f}" if r.data_bytes is not None else "—" for r in runs],
    )
    row(
        "peak memory VmHWM, all its processes (MiB)",
        [f"{hwm / 1024:,.0f}" if (hwm := r.memory_kib.get("vm_hwm_kib")) else "—" for r in runs],
    )
    return "\n".join(lines)


def _goal_cell(goal: Goal) -> str:
    if goal.met is None:
        return goal.measured
    return f"{goal.measured}: {_verdict(goal)}"


def goals_table(columns: list[tuple[str, list[Goal]]]) -> str:
    """One row per goal, one column per gateway configuration: measured, met or missed."""
    if not columns:
        return "(no gateway configuration was measured)"
    lines = [
        "| goal (gateway) | " + " | ".join(label for label, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for i, goal in enumerate(columns[0][1]):
        cells = [_goal_cell(goal_list[i]) for _, goal_list in columns]
        lines.append(f"| {goal.text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gateway_goals(runs: list[ServerRun]) -> list[tuple[str, list[Goal]]]:
    """The goals of every gateway configuration, against the peer of the same run."""
    peer = next((r for r in runs if r.name == PEER), None)
    return [(r.label, goals(r, peer)) for r in runs if r.name == GATEWAY]


def postgres_table(runs: list[ServerRun]) -> str:
    """PostgreSQL against SQLite at each worker count measured on both: the production
    database's goals, and the CPU each request costs in the gateway and in PostgreSQL."""
    lines = []
    for workers in sorted({r.workers for r in runs if r.name == GATEWAY}):
        found = {
            r.database: r
            for r in runs
            if r.name == GATEWAY and r.workers == workers and r.lookup and r.create
        }
        pg, lite = found.get("PostgreSQL"), found.get("SQLite")
        if pg is None or lite is None or pg.lookup is None or pg.create is None:
            continue
        if lite.lookup is None or lite.create is None:
            continue
        goals = [
            ("lookups >= 0.7x SQLite", pg.lookup.rps / lite.lookup.rps, "{:.2f}x", 0.7, True),
            ("creates >= 0.7x SQLite", pg.create.rps / lite.create.rps, "{:.2f}x", 0.7, True),
            ("creates >= 600 req/s", pg.create.rps, "{:,.0f} req/s", 600, True),
            ("lookups p99 < 25 ms", pg.lookup.p99_ms, "{:.2f} ms", 25, False),
        ]
        cells = [
            f"{fmt.format(value)}: **{_verdict_of(value >= bar if up else value < bar)}**"
            for _text, value, fmt, bar, up in goals
        ]

        def per_request(result: WrkResult) -> str:
            ms = 10 / result.rps if result.rps else 0.0
            return f"{result.server_cpu_pct * ms:.2f} / {result.database_cpu_pct * ms:.2f}"

        lines.append(
            f"| {workers} | "
            + " | ".join(cells)
            + f" | {per_request(pg.lookup)} | {per_request(pg.create)} |"
        )
    if not lines:
        return ""
    header = (
        "| workers | " + " | ".join(g for g in POSTGRES_GOALS) + " | CPU ms a lookup, "
        "gateway / PostgreSQL | CPU ms a create, gateway / PostgreSQL |"
    )
    return "\n".join(
        [
            "## PostgreSQL against SQLite",
            "",
            "The production database against the embedded default, same worker count, same "
            "run. CPU ms: the CPU time of the gateway's processes and of PostgreSQL's, per "
            "request, from the CPU % measured during the run.",
            "",
            header,
            "|---" * (len(POSTGRES_GOALS) + 3) + "|",
            *lines,
            "",
        ]
    )


def _verdict_of(met: bool) -> str:
    return "met" if met else "missed"


POSTGRES_GOALS = (
    "lookups >= 0.7x SQLite",
    "creates >= 0.7x SQLite",
    "creates >= 600 req/s",
    "lookups p99 < 25 ms",
)


# -- docs/benchmarks.md -------------------------------------------------------------------


def _commands(runs: list[ServerRun], harness: str) -> str:
    lines = ["```sh", "# the whole benchmark, as run for these results:", harness, ""]
    for run in runs:
        lines.append(f"# {run.label}")
        lines.append(run.command)
        for result in (run.lookup_small, run.lookup, run.create):
            if result is not None:
                lines.append(result.command)
        lines.append("")
    lines[-1] = "```"
    return "\n".join(lines)


def _findings(runs: list[ServerRun]) -> str:
    lines: list[str] = []
    for run in runs:
        notes: list[str] = []
        if run.error:
            notes.append(f"the run failed: `{run.error.splitlines()[0][:300]}`")
        for label, result in (
            ("lookups (small)", run.lookup_small),
            ("lookups", run.lookup),
            ("creates", run.create),
        ):
            if result is not None and result.disturbed:
                notes.append(
                    f"{label}: other processes used {result.other_cpu_pct:.0f}% of a CPU "
                    "during the measured run, which may have slowed it"
                )
            if result is not None and result.bad:
                notes.append(
                    f"{label}: {result.unexpected_status:,} unexpected statuses, "
                    f"{result.wrong_body:,} wrong bodies, socket errors "
                    f"{result.socket_errors}; first: `{result.first_bad[:200]}`"
                )
        other_bad = sum(w.bad for w in [*run.warmups, *run.discarded])
        if other_bad:
            notes.append(
                f"{other_bad:,} unexpected responses during the warm-ups or the repeated runs"
            )
        if run.discarded:
            notes.append(
                f"{len(run.discarded)} measured run(s) disturbed by other processes were "
                "repeated (the least disturbed is kept)"
            )
        if run.log_errors:
            notes.append(
                f"{len(run.log_errors):,} error lines in its log, first: "
                f"`{run.log_errors[0][:200]}`"
            )
        if run.workers == 1 and run.children:
            notes.append(f"it had {len(run.children)} child processes with one worker")
        if run.exit_code not in (0, -signal.SIGTERM, None):
            notes.append(f"it exited with {run.exit_code} when stopped with SIGTERM")
        lines += [f"- {run.label}: {note}" for note in notes]
    return "\n".join(lines) if lines else "- none: every measured response was as expected."


def markdown(
    runs: list[ServerRun],
    machine: dict[str, str],
    settings: LoadSettings,
    harness: str,
    uvicorn_options: str,
    seed_concurrency: int,
    extra_sections: str = "",
) -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in machine.items())
    users = max((r.users for r in runs), default=0)
    extra = "\n" + extra_sections if extra_sections else ""
    postgres = (
        f"\n- PostgreSQL ({machine.get('PostgreSQL', 'version unknown')}) is a throwaway "
        "cluster the harness creates with `pg_createcluster` and drops at the end, with "
        "Debian's default settings (`fsync`, `synchronous_commit` on); each configuration "
        "gets a fresh database, reached over TCP on 127.0.0.1. Its processes' CPU is the "
        "*database* share."
        if any(r.database == "PostgreSQL" for r in runs)
        else ""
    )
    return f"""# Benchmarks

SCIM performance of the gateway against [scim2-server](https://pypi.org/project/scim2-server/),
the reference SCIM server of python-scim, on the same machine. This page is written by
`python bench/run.py`; see [bench/README.md](../bench/README.md) for the harness. What the
profiles showed, what was changed for it and what limits the results:
[performance.md](performance.md).

Last run: {today}, with {users:,} users.

## Goals

Each gateway configuration against the peer of the same run.

{goals_table(gateway_goals(runs))}

{postgres_table(runs)}
## Results

Load: wrk, {settings.threads} threads, {settings.connections} connections,
{settings.duration_s} s measured after a {settings.warmup_s} s warm-up, per test. Latencies in ms.

{results_table(runs)}

- **filter lookup**: `GET /Users?filter=userName eq "user<i>@bench.example"`, `i` drawn at
  random over the seeded users for every request. A lookup counts as bad unless it
  answers 200 with `totalResults` 1.
- **create**: `POST /Users` with a new user per request, whose userName, externalId and
  phone number are unique (the gateway refuses a phone number already used in the
  account); bad unless it answers 201.
- **seeding**: the users are POSTed one by one over keep-alive connections,
  {seed_concurrency} at a time; every server gets the same bodies. On PostgreSQL a
  `VACUUM (ANALYZE)` follows each seeding, as autovacuum would soon after a bulk load
  (otherwise its catch-up lands in the measurement that follows).
- Every configuration starts from an empty database and is seeded on its own; the
  servers run one after the other, never two at once.
- The gateway runs `cloudlink-gateway serve --workers N` (uvicorn, N worker processes on
  one port); on SQLite with `GATEWAY_SQLITE_SYNCHRONOUS=FULL` (the default: every create is
  on disk before it is answered).{postgres}
- Peak memory is the `VmHWM` of `/proc/<pid>/status`, summed over the server's processes
  (the supervisor and its workers), read after seeding and all the load. The gateway
  keeps its data on disk (its size is shown; the OS page cache and PostgreSQL's memory are
  not counted), scim2-server keeps it in the process.
- scim2-server serves with **no authentication** (it has none); the gateway checks a
  bearer token on every request. It runs in one process under uvicorn ({uvicorn_options}).
- wrk runs on the same {machine["nproc"]} CPUs. *CPU %* is the share of one CPU used during
  the measured run by the server's processes, by its database server's (PostgreSQL), by
  wrk, and by everything else on the machine.

### Findings

{_findings(runs)}
{extra}
## Machine

| | |
|---|---|
{machine_rows}

## Commands

Ports are picked at random; tokens and passwords are redacted.

{_commands(runs, harness)}
"""
