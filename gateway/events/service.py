"""Recording and reading events.

Every state change writes its event with ``record_event`` on the same connection, in
the same transaction, as the change itself: a change without its event (or the
reverse) can never be committed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, insert, select

from storage.tables import Account, Event, utcnow

events = Event.__table__  # type: ignore[attr-defined]
accounts = Account.__table__  # type: ignore[attr-defined]

ACTIONS = ("Create", "Edit", "Delete")
_INSERT_EVENT = insert(events)
# FOR NO KEY UPDATE: exclusive among writers of the account, yet compatible with the
# KEY SHARE lock foreign key checks take on the account row.
_LOCK_ACCOUNT = (
    select(accounts.c.id)
    .where(accounts.c.id == bindparam("account_id"))
    .with_for_update(key_share=True)
)


@dataclass(frozen=True)
class Actor:
    """Who caused a change: a name for people (e.g. "SCIM", "Operator") and an id."""

    name: str
    id: str | None = None


SCIM_ACTOR = Actor("SCIM", "azure_ad_sync")
OPERATOR_API = Actor("Operator", "admin-api")
OPERATOR_CLI = Actor("Operator", "cli")


def lock_account(conn: Connection, account_id: str) -> None:
    """Serialise the writers of one account, on PostgreSQL; call it first in a write.

    The feed is read by ``seq``, so events of one account must commit in ``seq`` order:
    holding the account row until commit guarantees it. Taking the lock before any
    other statement keeps one lock order for every writer, so writers racing for the
    same unique value queue up instead of deadlocking. SQLite has one writer at a
    time and needs nothing.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_ACCOUNT, {"account_id": account_id})


def record_event(
    conn: Connection,
    *,
    account_id: str,
    actor: Actor,
    action: str,
    asset: str,
    asset_id: str | None,
    event_type: str,
    type: str,
    properties_changed: list[str],
    details: dict[str, Any],
    occurred_at: datetime | None = None,
) -> str:
    """Insert one event in the caller's transaction; returns its id.

    Call ``lock_account`` first thing in the transaction (see there); this call takes
    the lock too, for transactions that touched nothing before.
    """
    assert action in ACTIONS
    lock_account(conn, account_id)
    event_id = str(uuid.uuid4())
    conn.execute(
        _INSERT_EVENT,
        {
            "id": event_id,
            "account_id": account_id,
            "occurred_at": occurred_at or utcnow(),
            "actor_name": actor.name,
            "actor_id": actor.id,
            "action": action,
            "event_type": event_type,
            "asset": asset,
            "asset_id": asset_id,
            "type": type,
            "properties_changed": properties_changed,
            "details": details,
        },
    )
    return event_id


@dataclass(frozen=True)
class EventFilter:
    """The history filters an admin can combine (all optional)."""

    action: str | None = None
    asset: str | None = None
    actor: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(account_id: str, criteria: EventFilter) -> Select[Any]:
    query = select(events).where(events.c.account_id == account_id)
    if criteria.action:
        query = query.where(events.c.action == criteria.action)
    if criteria.asset:
        query = query.where(events.c.asset == criteria.asset)
    if criteria.actor:
        query = query.where(
            (events.c.actor_name == criteria.actor) | (events.c.actor_id == criteria.actor)
        )
    if criteria.event_type:
        query = query.where(events.c.event_type == criteria.event_type)
    if criteria.since:
        query = query.where(events.c.occurred_at >= criteria.since)
    if criteria.until:
        query = query.where(events.c.occurred_at < criteria.until)
    return query


def event_view(row: Any) -> dict[str, Any]:
    """The API shape of one event row."""
    return {
        "id": row.id,
        "cursor": str(row.seq),
        "occurred_at": row.occurred_at,
        "actor": {"name": row.actor_name, "id": row.actor_id},
        "action": row.action,
        "event_type": row.event_type,
        "asset": row.asset,
        "asset_id": row.asset_id,
        "type": row.type,
        "properties_changed": row.properties_changed,
        "details": row.details,
    }


def history_page(
    conn: Connection, account_id: str, criteria: EventFilter, *, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; ``before`` is the cursor of the last event of the previous page."""
    query = _filtered(account_id, criteria)
    if before is not None:
        query = query.where(events.c.seq < before)
    rows = conn.execute(query.order_by(events.c.seq.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = str(page[-1].seq) if len(rows) > limit else None
    return [event_view(row) for row in page], next_cursor


def history_rows(conn: Connection, account_id: str, criteria: EventFilter) -> list[Any]:
    """Every matching event, newest first (for CSV export)."""
    query = _filtered(account_id, criteria).order_by(events.c.seq.desc())
    return list(conn.execute(query).all())


def feed_page(
    conn: Connection, account_id: str, *, after: int, limit: int
) -> tuple[list[dict[str, Any]], str]:
    """Events in commit order after ``after``; returns them and the cursor to resume from."""
    rows = conn.execute(
        select(events)
        .where(events.c.account_id == account_id, events.c.seq > after)
        .order_by(events.c.seq)
        .limit(limit)
    ).all()
    items = [
        {
            "cursor": str(row.seq),
            "id": row.id,
            "type": row.type,
            "occurred_at": row.occurred_at,
            "data": row.details,
        }
        for row in rows
    ]
    return items, (str(rows[-1].seq) if rows else str(after))
