"""Recording and reading events.

A change records its event with ``record_event`` on the ``Transaction`` of the change
itself: a ``Transaction`` exists only inside ``Database.transact``, so an event cannot
be written outside the change's transaction, and the two commit together or not at all.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack

from sqlalchemy import Connection, Select, select, text, tuple_

from gateway.events.models import ActorOut, EventOut, FeedItem, FeedPage
from gateway.web.errors import InvalidValue
from storage.rows import EventRow
from storage.tables import ACCOUNTS, EVENTS
from storage.transaction import NewEvent, Transaction

ACTIONS = ("Create", "Edit", "Delete")


@dataclass(frozen=True)
class Actor:
    """Who caused a change: a name for people (e.g. "SCIM", "Operator") and an id."""

    name: str
    id: str | None = None


SCIM_ACTOR = Actor("SCIM", "azure_ad_sync")
OPERATOR_API = Actor("Operator", "admin-api")
OPERATOR_CLI = Actor("Operator", "cli")


class EventFields(TypedDict):
    """What a change says of its event (``record_event``, ``new_event``)."""

    account_id: str
    actor: Actor
    action: str
    asset: str
    asset_id: str | None
    category: str
    type: str
    properties_changed: list[str]
    details: dict[str, Any]


def record_event(tx: Transaction, **fields: Unpack[EventFields]) -> str:
    """Record one event in the change's transaction; returns its id.

    ``type`` says what happened (``message.received``); ``category`` the part of the
    product it belongs to (Messaging, Presence, Provisioning, Admin), the history's
    coarse filter, stored and shown as ``event_type`` (decision 0016).
    """
    event = new_event(**fields)
    tx.record_event(event)
    return event.id


def new_event(**fields: Unpack[EventFields]) -> NewEvent:
    """An event with a new id, for ``Transaction.record_event`` or a one-statement write
    (``storage.one_statement``)."""
    action, actor = fields["action"], fields["actor"]
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return NewEvent(
        id=str(uuid.uuid4()),
        account_id=fields["account_id"],
        actor_name=actor.name,
        actor_id=actor.id,
        action=action,
        category=fields["category"],
        asset=fields["asset"],
        asset_id=fields["asset_id"],
        type=fields["type"],
        properties_changed=fields["properties_changed"],
        details=fields["details"],
    )


@dataclass(frozen=True)
class EventFilter:
    """The history filters an admin can combine (all optional)."""

    action: str | None = None
    asset: str | None = None
    actor: str | None = None
    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def event_filter(
    params: Mapping[str, str], *, since: datetime | None, until: datetime | None
) -> EventFilter:
    """The history filters of a request's parameters (``action``, ``asset``, ``actor``,
    ``event_type``), its time range already parsed; an unknown action is refused."""
    action = params.get("action")
    if action is not None and action not in ACTIONS:
        raise InvalidValue(f"action must be one of {', '.join(ACTIONS)}.")
    return EventFilter(
        action=action,
        asset=params.get("asset") or None,
        actor=params.get("actor") or None,
        category=params.get("event_type") or None,
        since=since,
        until=until,
    )


def _filtered(account_id: str, criteria: EventFilter) -> Select[Any]:
    query = select(EVENTS).where(EVENTS.c.account_id == account_id)
    if criteria.action:
        query = query.where(EVENTS.c.action == criteria.action)
    if criteria.asset:
        query = query.where(EVENTS.c.asset == criteria.asset)
    if criteria.actor:
        query = query.where(
            (EVENTS.c.actor_name == criteria.actor) | (EVENTS.c.actor_id == criteria.actor)
        )
    if criteria.category:
        query = query.where(EVENTS.c.event_type == criteria.category)
    if criteria.since:
        query = query.where(EVENTS.c.occurred_at >= criteria.since)
    if criteria.until:
        query = query.where(EVENTS.c.occurred_at < criteria.until)
    return query


def event_out(row: EventRow) -> EventOut:
    """The API shape of one event row."""
    return EventOut(
        id=row.id,
        cursor=str(row.seq),
        occurred_at=row.occurred_at,
        actor=ActorOut(name=row.actor_name, id=row.actor_id),
        action=row.action,
        event_type=row.event_type,
        asset=row.asset,
        asset_id=row.asset_id,
        type=row.type,
        properties_changed=row.properties_changed,
        details=row.details,
    )


def account_exists(conn: Connection, account_id: str) -> bool:
    """Whether the account is there (history of an unknown account is a 404, not empty)."""
    row = conn.execute(select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == account_id)).first()
    return row is not None


def history_page(
    conn: Connection, account_id: str, criteria: EventFilter, *, before: int | None, limit: int
) -> tuple[list[EventOut], str | None]:
    """Newest first; ``before`` is the cursor of the last event of the previous page."""
    query = _filtered(account_id, criteria)
    if before is not None:
        query = query.where(EVENTS.c.seq < before)
    rows = conn.execute(query.order_by(EVENTS.c.seq.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = str(page[-1].seq) if len(rows) > limit else None
    return [event_out(row) for row in page], next_cursor


def history_rows(conn: Connection, account_id: str, criteria: EventFilter) -> list[Any]:
    """Every matching event, newest first (for CSV export)."""
    query = _filtered(account_id, criteria).order_by(EVENTS.c.seq.desc())
    return list(conn.execute(query).all())


MAX_POSITION = 2**63 - 1
FEED_POSITION = re.compile(r"^([0-9]{1,19})(?:\.([0-9]{1,19}))?$")
_HORIZON = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


def parse_position(raw: str) -> tuple[int | None, int]:
    """A feed cursor: ``SEQ`` (SQLite, and cursors of earlier versions) or ``TX.SEQ``."""
    found = FEED_POSITION.fullmatch(raw)
    if found is None:
        raise ValueError(raw)
    numbers = [int(part) for part in found.groups() if part is not None]
    if any(number > MAX_POSITION for number in numbers):
        raise ValueError(raw)
    if len(numbers) == 1:
        return None, numbers[0]
    return numbers[0], numbers[1]


def _postgres_position(
    conn: Connection, account_id: str, position: tuple[int | None, int]
) -> tuple[int, int]:
    tx_order, seq = position
    if tx_order is not None:
        return tx_order, seq
    if seq == 0:
        return 0, 0
    found = conn.execute(
        select(EVENTS.c.tx_order).where(EVENTS.c.account_id == account_id, EVENTS.c.seq == seq)
    ).scalar_one_or_none()
    return (found or 0), seq


def feed_page(conn: Connection, account_id: str, *, after: str, limit: int) -> FeedPage:
    """Events in commit order after ``after``, and the cursor to resume from.

    SQLite has one writer: events commit in ``seq`` order, and the cursor is ``seq``.
    On PostgreSQL transactions commit in any order, so the feed is read in the order of
    the inserting transactions' ids and only up to the oldest transaction still running
    (``pg_snapshot_xmin``): nothing can later appear before what was read (decision 0011).
    """
    position = parse_position(after)
    if conn.dialect.name != "postgresql":
        rows = conn.execute(
            select(EVENTS)
            .where(EVENTS.c.account_id == account_id, EVENTS.c.seq > position[1])
            .order_by(EVENTS.c.seq)
            .limit(limit)
        ).all()
        cursors = [str(row.seq) for row in rows]
    else:
        tx_order, seq = _postgres_position(conn, account_id, position)
        horizon = conn.execute(_HORIZON).scalar_one()
        rows = conn.execute(
            select(EVENTS)
            .where(
                EVENTS.c.account_id == account_id,
                tuple_(EVENTS.c.tx_order, EVENTS.c.seq) > (tx_order, seq),
                EVENTS.c.tx_order < horizon,
            )
            .order_by(EVENTS.c.tx_order, EVENTS.c.seq)
            .limit(limit)
        ).all()
        cursors = [f"{row.tx_order}.{row.seq}" for row in rows]
    items = [
        FeedItem(
            cursor=cursor,
            id=row.id,
            type=row.type,
            occurred_at=row.occurred_at,
            data=row.details,
        )
        for row, cursor in zip(rows, cursors, strict=True)
    ]
    return FeedPage(items=items, next_cursor=cursors[-1] if cursors else after)
