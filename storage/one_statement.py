"""Writes of one statement (PostgreSQL): a change, its event and its outbox rows as the
data-modifying CTEs of one statement, which is its own transaction (decision 0026).

A unit of ``Database.transact`` on PostgreSQL pays, for each statement, a round trip that a
database thread waits for, and then the GIL, which the busy event loop holds; BEGIN and
COMMIT are round trips too. A unit with no logic between its statements (a SCIM create:
insert the user, record its event, wake the presence directory if the account has a
monitor) can be one statement instead, run in autocommit on the event loop's connections
(``Database.write_statement``): one round trip, its commit included, and no thread. Every
CTE of the statement is applied or none is, so the event still commits exactly with its
change (decision 0007's invariant), and only this module and ``storage.transaction``
write events.

SQLite has no data-modifying CTEs; there the same unit runs through ``Database.transact``,
where its statements are not round trips.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CTE,
    BindParameter,
    ColumnElement,
    bindparam,
    exists,
    func,
    insert,
    literal,
    select,
)

from storage.tables import EVENTS, OUTBOX, JSONType
from storage.transaction import (
    OUTBOX_COLUMNS,
    NewEvent,
    event_insert_postgres,
    event_row,
    fan_out,
    make_waiting_row_due,
)

# Parameters of the event's CTEs, prefixed so that they never meet the change's own.
_EVENT = "event_"
# The statement's moment (seconds since the epoch), shared by every outbox row it writes.
MOMENT = "moment"


def event_ctes(when: ColumnElement[bool] | None = None) -> list[CTE]:
    """The event and one delivery per enabled endpoint of its account: CTEs ``new_event``
    and ``event_deliveries`` (its outbox keys), as ``Transaction.record_event`` writes them;
    with ``when``, only where it holds (a change that found it had nothing to write).
    Parameters: ``event_params``."""
    deliveries = fan_out(
        bindparam(_EVENT + "account_id", type_=EVENTS.c.account_id.type),
        bindparam(_EVENT + "delivery", type_=JSONType),
        bindparam(MOMENT),
        when,
    ).returning(OUTBOX.c.pk)
    return [
        event_insert_postgres(_EVENT, when).cte("new_event"),
        deliveries.cte("event_deliveries"),
    ]


def event_params(event: NewEvent) -> dict[str, Any]:
    """The parameters of ``event_ctes`` for ``event``."""
    return {
        **{_EVENT + name: value for name, value in event_row(event).items()},
        _EVENT + "delivery": {"event_id": event.id},
    }


def enqueue_once_ctes(
    name: str, *, account_id: Any, kind: str, target_id: Any, when: ColumnElement[bool]
) -> list[CTE]:
    """``Transaction.enqueue_once`` as CTEs, done only where ``when`` holds: the target's
    waiting row is made due at ``<name>_at`` if that is sooner, else a row is added. CTEs
    ``<name>_reused`` and ``<name>_added`` (the added row's key). Parameters: ``<name>_at``
    and ``moment``; ``account_id`` and ``target_id`` are SQL expressions."""
    at: BindParameter[float] = bindparam(f"{name}_at")
    moment: BindParameter[float] = bindparam(MOMENT)
    reused = (
        make_waiting_row_due(
            account_id=account_id, kind=kind, target_id=target_id, at=at, moment=moment
        )
        .where(when)
        .returning(OUTBOX.c.pk)
        .cte(f"{name}_reused")
    )
    added = (
        insert(OUTBOX)
        .from_select(
            OUTBOX_COLUMNS,
            select(
                account_id,
                literal(kind),
                target_id,
                literal({}, JSONType),
                literal("pending"),
                literal(0),
                at,
                moment,
                moment,
            ).where(when, ~exists(select(reused.c.pk))),
        )
        .returning(OUTBOX.c.pk)
        .cte(f"{name}_added")
    )
    return [reused, added]


def enqueued(*ctes: CTE) -> ColumnElement[int]:
    """How many rows the outbox CTEs ``ctes`` added: the result column ``enqueued`` that
    ``Database.write_statement`` wakes this process's outbox worker on."""
    counts = [select(func.count()).select_from(cte).scalar_subquery() for cte in ctes]
    total: ColumnElement[int] = counts[0]
    for count in counts[1:]:
        total = total + count
    return total.label("enqueued")
