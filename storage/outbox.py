"""The outbox: side effects written with the change that causes them, delivered by workers.

A row is written by ``Transaction.enqueue`` (or by ``Transaction.record_event``, once per
enabled endpoint of the account) in the change's own transaction, so a side effect
exists exactly when its change committed. Workers claim due rows with a lease:

- PostgreSQL: ``FOR UPDATE SKIP LOCKED`` in the claiming statement, so processes that
  claim at once take disjoint rows without waiting for each other.
- SQLite: one writer at a time, so the claiming UPDATE is atomic by itself.

A claim holds until ``lease_until``; a worker that dies loses its claims when their
leases run out, and another takes the rows. Every later change of a claimed row checks
``lease_owner``, so a worker whose lease was taken over cannot complete the row.
Attempts are counted at claim time: a row that crashes its worker still runs out of
attempts instead of looping forever. A claim taken over after its lease ran out, a claim
given back at shutdown, and an attempt that went unanswered leave the row's
``outcome_unknown`` set: the call may have reached the other side, and a handler whose
call creates something (a send) looks there before it repeats it. A row out of attempts
is a dead letter until an operator replays it (``revive``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, func, literal, or_, select, update

from storage.tables import OUTBOX

PENDING = "pending"
DEAD = "dead"


@dataclass(frozen=True)
class Claimed:
    """A row a worker holds: what to do, and how many attempts it has had (this one too)."""

    pk: int
    account_id: str
    kind: str
    target_id: str
    payload: dict[str, Any]
    attempts: int
    created_at: float
    # An earlier attempt may have reached the other side (see the module's docstring).
    outcome_unknown: bool = False


def now() -> float:
    """The outbox's clock: seconds since the epoch."""
    return time.time()


def _due(moment: float) -> Any:
    return (
        (OUTBOX.c.status == PENDING)
        & (OUTBOX.c.available_at <= moment)
        & or_(OUTBOX.c.lease_until.is_(None), OUTBOX.c.lease_until < moment)
    )


_HOLDER = OUTBOX.alias("holder")


def _claimable(moment: float, serial: Collection[str]) -> Any:
    """Due, and for a row of a ``serial`` kind, no other row of its kind and target held.

    A job that takes seconds and is asked for again meanwhile (an account's directory
    run, a monitor's upkeep) must not run twice at once: the second run repeats the first
    one's calls, and under load every run that times out brings another, until the
    provider's budget goes to runs that are thrown away.
    """
    if not serial:
        return _due(moment)
    held = (
        select(literal(1))
        .where(
            _HOLDER.c.kind == OUTBOX.c.kind,
            _HOLDER.c.target_id == OUTBOX.c.target_id,
            _HOLDER.c.status == PENDING,
            _HOLDER.c.lease_until >= moment,
        )
        .exists()
    )
    return _due(moment) & or_(OUTBOX.c.kind.not_in(list(serial)), ~held)


def has_due(conn: Connection, moment: float, serial: Collection[str] = ()) -> bool:
    """Whether any row can be claimed: a read, so an idle worker never opens a write."""
    found = select(literal(1)).where(_claimable(moment, serial)).limit(1)
    return conn.execute(found).first() is not None


def claim(
    conn: Connection,
    *,
    owner: str,
    moment: float,
    lease: float,
    limit: int,
    serial: Collection[str] = (),
) -> list[Claimed]:
    """Claim up to ``limit`` due rows for ``owner`` until ``moment + lease``; of the
    ``serial`` kinds, one row per target at a time (``_claimable``)."""
    chosen = (
        select(OUTBOX.c.pk)
        .where(_claimable(moment, serial))
        .order_by(OUTBOX.c.available_at, OUTBOX.c.pk)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.pk.in_(chosen.scalar_subquery()))
        .values(
            lease_owner=owner,
            lease_until=moment + lease,
            attempts=OUTBOX.c.attempts + 1,
            updated_at=moment,
            # Still held by someone: that claim's lease ran out without an outcome.
            outcome_unknown=case(
                (OUTBOX.c.lease_owner.is_not(None), True), else_=OUTBOX.c.outcome_unknown
            ),
        )
        .returning(
            OUTBOX.c.pk,
            OUTBOX.c.account_id,
            OUTBOX.c.kind,
            OUTBOX.c.target_id,
            OUTBOX.c.payload,
            OUTBOX.c.attempts,
            OUTBOX.c.created_at,
            OUTBOX.c.outcome_unknown,
        )
    ).all()
    claimed = [
        Claimed(
            pk=row.pk,
            account_id=row.account_id,
            kind=row.kind,
            target_id=row.target_id,
            payload=row.payload,
            attempts=row.attempts,
            created_at=row.created_at,
            outcome_unknown=bool(row.outcome_unknown),
        )
        for row in rows
    ]
    claimed.sort(key=lambda item: item.pk)
    if serial:
        claimed = _one_per_target(conn, owner, claimed, serial)
    return claimed


def _one_per_target(
    conn: Connection, owner: str, claimed: list[Claimed], serial: Collection[str]
) -> list[Claimed]:
    """The claimed rows, the second and later rows of one serial target given back (two
    of them were due at once): they wait, unattempted, until the first is done."""
    kept: list[Claimed] = []
    seen: set[tuple[str, str]] = set()
    extra: list[int] = []
    for row in claimed:
        key = (row.kind, row.target_id)
        if row.kind in serial and key in seen:
            extra.append(row.pk)
            continue
        seen.add(key)
        kept.append(row)
    release(conn, owner=owner, pks=extra, started=False)
    return kept


# A row still held by its claimer; statements built once (each settles one delivery).
_HELD = (
    (OUTBOX.c.pk == bindparam("row_pk"))
    & (OUTBOX.c.lease_owner == bindparam("owner"))
    & (OUTBOX.c.status == PENDING)
)
_COMPLETE = delete(OUTBOX).where(_HELD)
_RELEASE_HELD = update(OUTBOX).where(_HELD)
_RELEASE_UNANSWERED = update(OUTBOX).where(_HELD).values(outcome_unknown=True)


def complete(conn: Connection, *, pk: int, owner: str) -> bool:
    """Delete a delivered row; False if ``owner`` no longer holds it."""
    return conn.execute(_COMPLETE, {"row_pk": pk, "owner": owner}).rowcount == 1


def _unclaimed(error: str) -> dict[str, Any]:
    """The values of a row given up by its claimer, with the error that made it so."""
    return {
        "lease_owner": None,
        "lease_until": None,
        "last_error": error[:1000],
        "updated_at": now(),
    }


def retry_later(
    conn: Connection, *, pk: int, owner: str, at: float, error: str, unanswered: bool = False
) -> bool:
    """Free the row for another attempt at ``at``; False if ``owner`` no longer holds it.

    ``unanswered``: this attempt's call may have reached the other side. A doubt stays
    until the row is done: the next attempt may fail before it has looked."""
    values = {"row_pk": pk, "owner": owner, "available_at": at, **_unclaimed(error)}
    statement = _RELEASE_UNANSWERED if unanswered else _RELEASE_HELD
    return conn.execute(statement, values).rowcount == 1


def bury(conn: Connection, *, pk: int, owner: str, error: str) -> bool:
    """Move the row to the dead letters; False if ``owner`` no longer holds it."""
    values = {"row_pk": pk, "owner": owner, "status": DEAD, **_unclaimed(error)}
    return conn.execute(_RELEASE_HELD, values).rowcount == 1


def bury_target(
    conn: Connection, *, kind: str, target_id: str, error: str, keep: int | None = None
) -> int:
    """Move every pending row of one target (a disabled endpoint) to the dead letters,
    but ``keep`` (the row whose worker is burying it itself)."""
    result = conn.execute(
        update(OUTBOX)
        .where(
            OUTBOX.c.kind == kind,
            OUTBOX.c.target_id == target_id,
            OUTBOX.c.status == PENDING,
            OUTBOX.c.pk != (keep if keep is not None else -1),
        )
        .values(status=DEAD, **_unclaimed(error))
    )
    return result.rowcount


def release(conn: Connection, *, owner: str, pks: Sequence[int], started: bool = True) -> int:
    """Give back claims ``owner`` did not finish (shutdown), due at once, attempt refunded.

    The outcome of a ``started`` one is unknown: an attempt stopped midway may have been
    sent. One given back before it started (``_one_per_target``) keeps what it knew."""
    if not pks:
        return 0
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_until": None,
        "attempts": OUTBOX.c.attempts - 1,
        "updated_at": now(),
    }
    if started:
        values["outcome_unknown"] = True
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.pk.in_(list(pks)), OUTBOX.c.lease_owner == owner)
        .values(values)
    )
    return result.rowcount


@dataclass(frozen=True)
class Revived:
    """A dead letter queued again, and who asked for it (by the name and id an event
    records): what the feature owning the row needs to move its target back and say so."""

    pk: int
    account_id: str
    kind: str
    target_id: str
    payload: dict[str, Any]
    actor_name: str
    actor_id: str | None


def revive(
    conn: Connection,
    *,
    account_id: str,
    pks: Sequence[int] | None,
    actor_name: str,
    actor_id: str | None,
) -> list[Revived]:
    """Queue dead letters of one account again, due now with fresh attempts: those of
    ``pks`` (others are left alone), or every one when None. The rows revived, by pk."""
    query = update(OUTBOX).where(OUTBOX.c.account_id == account_id, OUTBOX.c.status == DEAD)
    if pks is not None:
        query = query.where(OUTBOX.c.pk.in_(list(pks)))
    moment = now()
    rows = conn.execute(
        query.values(status=PENDING, attempts=0, available_at=moment, updated_at=moment).returning(
            OUTBOX.c.pk, OUTBOX.c.kind, OUTBOX.c.target_id, OUTBOX.c.payload
        )
    ).all()
    revived = [
        Revived(
            pk=row.pk,
            account_id=account_id,
            kind=row.kind,
            target_id=row.target_id,
            payload=row.payload,
            actor_name=actor_name,
            actor_id=actor_id,
        )
        for row in rows
    ]
    revived.sort(key=lambda item: item.pk)
    return revived


@dataclass(frozen=True)
class Backlog:
    """What the metrics show of the outbox at one moment.

    ``due``: pending rows whose time has come (waiting for a worker, or being delivered);
    ``oldest_due_at``: when the oldest of them became due (its ``available_at``);
    ``scheduled``: pending rows due later (presence refreshes, retries waiting out their
    backoff), which are the outbox working as planned rather than falling behind.
    """

    due: int
    oldest_due_at: float | None
    scheduled: int
    dead: int


def backlog(conn: Connection, moment: float) -> Backlog:
    """Due, scheduled and dead counts at ``moment``, and when the oldest due row became due."""
    pending = OUTBOX.c.status == PENDING
    due = pending & (OUTBOX.c.available_at <= moment)
    row = conn.execute(
        select(
            func.count(case((due, 1))),
            func.min(case((due, OUTBOX.c.available_at))),
            func.count(case((pending & (OUTBOX.c.available_at > moment), 1))),
            func.count(case((OUTBOX.c.status == DEAD, 1))),
        )
    ).one()
    return Backlog(due=row[0], oldest_due_at=row[1], scheduled=row[2], dead=row[3])


def forget_dead(conn: Connection, *, account_id: str, kind: str) -> int:
    """Delete the account's dead letters of one kind (work a newer request replaces)."""
    result = conn.execute(
        delete(OUTBOX).where(
            OUTBOX.c.account_id == account_id, OUTBOX.c.kind == kind, OUTBOX.c.status == DEAD
        )
    )
    return result.rowcount
