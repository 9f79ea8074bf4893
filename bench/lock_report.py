"""The lock-hold experiment's numbers, its requirements met or missed, its Markdown section."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from lock_hold import LockResult, Sample


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


@dataclass(frozen=True)
class Summary:
    """The experiment's numbers, and whether each requirement was met."""

    probes: int
    probe_p99_ms: float
    probe_max_ms: float
    probes_slow: int  # over the answer limit, or not 200
    probe_slowest: str  # which probe was the slowest during the hold, and when
    probe_max_ms_outside: float  # for comparison: the slowest probe outside the hold
    reads: int
    reads_ok: int
    read_p50_ms: float
    read_p99_ms: float
    read_max_ms: float
    must_fail: int  # writes sent during the hold whose lock timeout ended before the release
    refused: int  # ... of them answered 503 with Retry-After
    refused_min_ms: float
    refused_p50_ms: float
    refused_max_ms: float
    refused_in_time: int  # ... and within lock timeout .. lock timeout + late_s
    retry_after: str
    near_release: dict[int, int]  # writes sent in the last lock timeout of the hold: status
    stored_during_hold: int  # sent during the hold, answered 201 before the release began
    writes_before: int
    writes_after_ok: int  # 201 to writes sent after the release
    created: int  # all 201 answers
    stored_ok: bool  # users_after - users_before == created, and no refused user stored

    @property
    def probes_met(self) -> bool:
        return self.probes > 0 and self.probes_slow == 0

    @property
    def reads_met(self) -> bool:
        return self.reads > 0 and self.reads_ok == self.reads

    @property
    def writes_met(self) -> bool:
        return self.must_fail > 0 and self.refused_in_time == self.must_fail

    @property
    def nothing_stored_met(self) -> bool:
        return self.stored_during_hold == 0 and self.stored_ok


def summarize(result: LockResult) -> Summary | None:
    """The numbers of one run, split by when each request was sent; None without a hold."""
    hold, s = result.hold, result.settings
    if hold is None:
        return None

    def during(x: Sample) -> bool:
        return x.sent >= hold.started and x.answered <= hold.releasing

    probes = [x for x in result.samples if x.kind in {"livez", "metrics"}]
    probes_in = [x for x in probes if during(x)]
    probe_ms = sorted(x.ms for x in probes_in)
    slowest = max(probes_in, key=lambda x: x.ms, default=None)
    reads = [x for x in result.samples if x.kind == "read" and during(x)]
    read_ms = sorted(x.ms for x in reads)
    writes = [x for x in result.samples if x.kind == "write"]
    timeout_ms = 1000 * s.lock_timeout_s
    must_fail = [x for x in writes if hold.started <= x.sent < hold.releasing - s.lock_timeout_s]
    refused = [x for x in must_fail if x.status == 503 and x.retry_after]
    refused_ms = sorted(x.ms for x in refused)
    near = [x for x in writes if hold.releasing - s.lock_timeout_s <= x.sent < hold.releasing]
    near_release: dict[int, int] = {}
    for x in near:
        near_release[x.status] = near_release.get(x.status, 0) + 1
    created = sum(1 for x in writes if x.status == 201)
    return Summary(
        probes=len(probes_in),
        probe_p99_ms=_pct(probe_ms, 99),
        probe_max_ms=max(probe_ms, default=0.0),
        probes_slow=sum(1 for x in probes_in if x.status != 200 or x.ms > s.answer_limit_ms),
        probe_slowest=f"/{slowest.kind}, {slowest.sent - hold.started:.1f} s into the hold"
        if slowest
        else "—",
        probe_max_ms_outside=max((x.ms for x in probes if not during(x)), default=0.0),
        reads=len(reads),
        reads_ok=sum(1 for x in reads if x.ok),
        read_p50_ms=_pct(read_ms, 50),
        read_p99_ms=_pct(read_ms, 99),
        read_max_ms=max(read_ms, default=0.0),
        must_fail=len(must_fail),
        refused=len(refused),
        refused_min_ms=min(refused_ms, default=0.0),
        refused_p50_ms=_pct(refused_ms, 50),
        refused_max_ms=max(refused_ms, default=0.0),
        refused_in_time=sum(
            1 for x in refused if 0.98 * timeout_ms <= x.ms <= timeout_ms + 1000 * s.late_s
        ),
        retry_after=", ".join(sorted({x.retry_after or "" for x in refused})) or "—",
        near_release=near_release,
        # Sent once the lock was ours, answered 201 before we let it go: written during it.
        stored_during_hold=sum(
            1
            for x in writes
            if x.status == 201 and hold.started <= x.sent and x.answered < hold.releasing
        ),
        writes_before=sum(1 for x in writes if x.sent < hold.started and x.status == 201),
        writes_after_ok=sum(1 for x in writes if x.sent >= hold.released and x.status == 201),
        created=created,
        stored_ok=result.users_after - result.users_before == created
        and result.refused_stored == 0,
    )


def describe(result: LockResult) -> str:
    """One line for the console."""
    summary = summarize(result)
    if summary is None:
        return f"  lock hold: no result ({result.error})"
    return (
        f"  lock hold: probes {summary.probes} p99 {summary.probe_p99_ms:.1f} ms max "
        f"{summary.probe_max_ms:.1f} ms ({summary.probes_slow} over "
        f"{result.settings.answer_limit_ms:.0f} ms); reads {summary.reads_ok}/{summary.reads} "
        f"ok p99 {summary.read_p99_ms:.1f} ms; writes refused {summary.refused}/"
        f"{summary.must_fail} in {summary.refused_min_ms:.0f}..{summary.refused_max_ms:.0f} ms; "
        f"stored during hold {summary.stored_during_hold}; users "
        f"{result.users_before:,} -> {result.users_after:,} (+{summary.created} created, "
        f"{result.refused_stored} refused but stored)"
    )


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def markdown(results: list[LockResult]) -> str:
    """The experiment's section of docs/benchmarks.md."""
    if not results:
        return ""
    s = results[0].settings
    head = "| | " + " | ".join(r.label for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    summaries = [summarize(r) for r in results]

    def row(label: str, cell: Callable[[Summary, LockResult], str]) -> None:
        cells = [cell(x, r) if x else "—" for x, r in zip(summaries, results, strict=True)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    limit = f"{s.answer_limit_ms:.0f} ms"
    row(
        f"/livez and /metrics during the hold: answers, p99 / max ms, over {limit}",
        lambda x, _r: f"{x.probes:,}, {x.probe_p99_ms:.1f} / {x.probe_max_ms:.1f}, {x.probes_slow}",
    )
    row("(the slowest of them)", lambda x, _r: x.probe_slowest)
    row(
        "(slowest /livez or /metrics outside the hold, ms)",
        lambda x, _r: f"{x.probe_max_ms_outside:.1f}",
    )
    row(
        "lookups during the hold: found / answered, p50 / p99 / max ms",
        lambda x, _r: (
            f"{x.reads_ok:,} / {x.reads:,}, {x.read_p50_ms:.1f} / "
            f"{x.read_p99_ms:.1f} / {x.read_max_ms:.1f}"
        ),
    )
    row(
        "creates sent during the hold (lock timeout over before the release): "
        "503 with Retry-After / sent",
        lambda x, _r: f"{x.refused} / {x.must_fail}",
    )
    row(
        "their latency min / p50 / max ms; Retry-After",
        lambda x, _r: (
            f"{x.refused_min_ms:,.0f} / {x.refused_p50_ms:,.0f} / "
            f"{x.refused_max_ms:,.0f}; {x.retry_after} s"
        ),
    )
    row(
        "creates sent in the hold's last lock timeout: answers by status",
        lambda x, _r: ", ".join(f"{k}: {v}" for k, v in sorted(x.near_release.items())) or "none",
    )
    row("creates answered 201 during the hold", lambda x, _r: f"{x.stored_during_hold}")
    row(
        "creates answered 201 before the hold / after the release",
        lambda x, _r: f"{x.writes_before} / {x.writes_after_ok}",
    )
    row(
        "users before → after (all 201s; refused but stored)",
        lambda x, r: f"{r.users_before:,} → {r.users_after:,} ({x.created}; {r.refused_stored})",
    )
    row("error lines in the gateway's log", lambda _x, r: f"{len(r.log_errors)}")

    goals = [
        (
            f"every /livez and /metrics answer during the hold: 200 within {limit}",
            lambda x: x.probes_met,
        ),
        ("lookups keep being served during the hold (all found)", lambda x: x.reads_met),
        (
            f"creates waiting past the lock timeout get 503 with Retry-After, within "
            f"{s.lock_timeout_s:g}..{s.lock_timeout_s + s.late_s:g} s",
            lambda x: x.writes_met,
        ),
        (
            "nothing written during the hold; stored users = creates answered 201",
            lambda x: x.nothing_stored_met,
        ),
    ]
    goal_lines = [
        "| requirement | " + " | ".join(r.label for r in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for text, check in goals:
        cells = [_verdict(check(x)) if x else "not measured" for x in summaries]
        goal_lines.append(f"| {text} | " + " | ".join(cells) + " |")
    errors = [f"- {r.label}: `{r.error.splitlines()[0][:300]}`" for r in results if r.error]
    goal_table, table = "\n".join(goal_lines), "\n".join(lines)
    failures = "\n" + "\n".join(errors) + "\n" if errors else ""
    commands = "\n".join(r.command for r in results)
    return f"""## Lock hold

Another process holds SQLite's write lock (`BEGIN IMMEDIATE` on the gateway's file) for
{s.hold_s:g} s while the gateway serves, with `GATEWAY_DATABASE_LOCK_TIMEOUT={s.lock_timeout_s:g}`,
after the benchmark on the same data. Before, during and {s.after_s:g} s after the hold, three
processes load it: sequential `GET /livez` and `GET /metrics` in turn, {s.readers} loops of
`userName eq` lookups, and {s.writers} loops of creates of new users. A create *sent during the
hold* is one sent at least a lock timeout before the release: it must be refused. Counted with
SCIM (`totalResults`) before and after; every user whose create was answered 503 is looked up.

{goal_table}

{table}
{failures}
```sh
{commands}
```
"""
