"""A write transaction in progress: the only way a change and its event reach the database.

``Database.transact`` creates a ``Transaction`` around each unit of work and hands it to
the unit; nothing else creates one. Events are inserted only through
``Transaction.record_event``, so an event can never be written outside the transaction
of the change it describes, and a change whose unit raises leaves neither behind.
The outbox rows of side effects (messages to send, events to deliver to each of the
account's endpoints) are written here too, next to the event, by ``enqueue`` and by
``record_event`` itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    Update,
    bindparam,
    case,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)

from storage.prepared import Prepared
from storage.tables import ACCOUNTS, ENDPOINTS, EVENTS, OUTBOX, JSONType, utcnow

EVENT_DELIVERY = "event"
_INSERT_EVENT = Prepared(insert(EVENTS))
# What ``record_event`` gives: every column but the key and the transaction's order.
_EVENT_COLUMNS = tuple(c.name for c in EVENTS.c if c.name not in ("seq", "tx_order"))
# The outbox columns a new row is given (the others keep their defaults).
OUTBOX_COLUMNS = (
    "account_id",
    "kind",
    "target_id",
    "payload",
    "status",
    "attempts",
    "available_at",
    "created_at",
    "updated_at",
)


def event_insert_postgres(prefix: str = "", when: ColumnElement[bool] | None = None) -> Insert:
    """PostgreSQL's INSERT of one event: it records its transaction's id, which orders
    the feed (0011). Every other column is a parameter named ``prefix`` + the column, so
    that the statement can be a CTE of another too; with ``when``, only where it holds."""
    row = {
        **{name: bindparam(prefix + name, type_=EVENTS.c[name].type) for name in _EVENT_COLUMNS},
        "tx_order": literal_column("pg_current_xact_id()::text::bigint"),
    }
    if when is None:
        return insert(EVENTS).values(row)
    return insert(EVENTS).from_select(list(row), select(*row.values()).where(when))


def fan_out(
    account_id: ColumnElement[str],
    payload: ColumnElement[Any],
    moment: Any,
    when: ColumnElement[bool] | None = None,
) -> Insert:
    """One delivery per enabled endpoint of the account, in the event's own transaction
    (with ``when``, only where it holds)."""
    source = select(
        ENDPOINTS.c.account_id,
        literal(EVENT_DELIVERY),
        ENDPOINTS.c.id,
        payload,
        literal("pending"),
        literal(0),
        moment,
        moment,
        moment,
    ).where(ENDPOINTS.c.account_id == account_id, ENDPOINTS.c.status == "enabled")
    if when is not None:
        source = source.where(when)
    return insert(OUTBOX).from_select(OUTBOX_COLUMNS, source)


_EVENT_POSTGRES = event_insert_postgres()
_INSERT_EVENT_POSTGRES = Prepared(_EVENT_POSTGRES)
_INSERT_OUTBOX = insert(OUTBOX)
_FAN_OUT_SELECT = fan_out(
    bindparam("account_id"), bindparam("payload", type_=JSONType), bindparam("moment")
)
_FAN_OUT = Prepared(_FAN_OUT_SELECT.returning(OUTBOX.c.pk))
# PostgreSQL: the event and its deliveries in one statement (one round trip, not two).
_RECORD_EVENT_POSTGRES = Prepared(
    _FAN_OUT_SELECT.add_cte(_EVENT_POSTGRES.cte("new_event")).returning(OUTBOX.c.pk)
)
_FAN_OUT_MANY = Prepared(_FAN_OUT_SELECT)
_HAS_ENDPOINT = Prepared(
    select(ENDPOINTS.c.id)
    .where(ENDPOINTS.c.account_id == bindparam("account_id"), ENDPOINTS.c.status == "enabled")
    .limit(1)
)
# FOR NO KEY UPDATE: exclusive among writers of the account, yet compatible with the
# KEY SHARE lock that foreign key checks take on the account row.
_LOCK_ACCOUNT = (
    select(ACCOUNTS.c.id)
    .where(ACCOUNTS.c.id == bindparam("account_id"))
    .with_for_update(key_share=True)
)


@dataclass(frozen=True)
class NewEvent:
    """One entry of an account's history and feed, as the change that causes it describes it."""

    id: str
    account_id: str
    actor_name: str
    actor_id: str | None
    action: str
    category: str
    asset: str
    asset_id: str | None
    type: str
    properties_changed: list[str]
    details: dict[str, Any]
    occurred_at: datetime | None = None


def event_row(event: NewEvent) -> dict[str, Any]:
    """The columns ``event`` is stored with (all but its key and its transaction's order)."""
    return {
        "id": event.id,
        "account_id": event.account_id,
        "occurred_at": event.occurred_at or utcnow(),
        "actor_name": event.actor_name,
        "actor_id": event.actor_id,
        "action": event.action,
        "event_type": event.category,
        "asset": event.asset,
        "asset_id": event.asset_id,
        "type": event.type,
        "properties_changed": event.properties_changed,
        "details": event.details,
    }


def make_waiting_row_due(
    *, account_id: Any, kind: str, target_id: Any, at: ColumnElement[float], moment: Any
) -> Update:
    """The UPDATE of ``enqueue_once``: the target's waiting row made due at ``at`` if that
    is sooner. A row being worked on is not waiting: unclaimed, or claimed by a worker whose
    lease ran out (it is free again)."""
    return (
        update(OUTBOX)
        .where(
            OUTBOX.c.kind == kind,
            OUTBOX.c.target_id == target_id,
            OUTBOX.c.account_id == account_id,
            OUTBOX.c.status == "pending",
            or_(OUTBOX.c.lease_owner.is_(None), OUTBOX.c.lease_until <= moment),
        )
        .values(
            available_at=case((OUTBOX.c.available_at > at, at), else_=OUTBOX.c.available_at),
            updated_at=moment,
        )
    )


class Transaction:
    """The connection of one unit of work, inside a transaction ``Database.transact`` owns."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._locked: set[str] = set()
        # Rows of events recorded inside ``batched_events``, not inserted yet.
        self._batch: list[dict[str, Any]] | None = None
        # Whether this unit wrote outbox rows: the database tells the workers after commit.
        self.enqueued = False

    def lock_account(self, account_id: str) -> None:
        """Serialise the writers of one account until commit (PostgreSQL; SQLite has one writer).

        For changes that check the account's state before they write (SCIM's uniqueness
        claims, admin settings): taking it before any other statement keeps one lock order
        for every such writer, so writers racing for one unique value queue instead of
        deadlocking (decision 0006). The feed's order no longer needs it (decision 0011):
        high-rate writers (webhooks) do without it.
        """
        if account_id in self._locked:
            return
        self._locked.add(account_id)
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(_LOCK_ACCOUNT, {"account_id": account_id})

    def record_event(self, event: NewEvent) -> None:
        """Insert ``event`` in this transaction (it commits with the change or not at all).

        Refuses to write when no database transaction is open on the connection, so an
        event can never be committed on its own, whoever built this object.
        """
        self._require_open()
        row = event_row(event)
        if self._batch is not None:
            self._batch.append(row)
            return
        fan_out = {"payload": {"event_id": event.id}, "moment": time.time()}
        if self.conn.dialect.name == "postgresql":
            fanned = _RECORD_EVENT_POSTGRES.run(self.conn, {**row, **fan_out})
        else:
            self._insert_events.run(self.conn, row)
            fanned = _FAN_OUT.run(self.conn, {"account_id": event.account_id, **fan_out})
        # RETURNING, as PostgreSQL's driver reports no row count for INSERT ... SELECT.
        if fanned.fetchone() is not None:
            self.enqueued = True

    @contextmanager
    def batched_events(self) -> Iterator[None]:
        """Events recorded inside are inserted together as it ends, with their deliveries.

        For units that record hundreds (a read-back of 650 users): one ``executemany``
        instead of two statements an event. Nothing in the unit reads them back before.
        """
        if self._batch is not None:
            yield
            return
        self._batch = []
        try:
            yield
            rows = self._batch
        finally:
            self._batch = None
        if not rows:
            return
        self._insert_events.run_many(self.conn, rows)
        moment = time.time()
        for account_id in dict.fromkeys(row["account_id"] for row in rows):
            if _HAS_ENDPOINT.run(self.conn, {"account_id": account_id}).fetchone() is None:
                continue
            _FAN_OUT_MANY.run_many(
                self.conn,
                [
                    {"account_id": account_id, "payload": {"event_id": row["id"]}, "moment": moment}
                    for row in rows
                    if row["account_id"] == account_id
                ],
            )
            self.enqueued = True

    @property
    def _insert_events(self) -> Prepared:
        return _INSERT_EVENT_POSTGRES if self.conn.dialect.name == "postgresql" else _INSERT_EVENT

    def enqueue(
        self,
        *,
        account_id: str,
        kind: str,
        target_id: str,
        payload: dict[str, Any],
        delay: float = 0.0,
    ) -> None:
        """Write one side effect to the outbox: it exists exactly when this change commits."""
        self._require_open()
        moment = time.time()
        self.conn.execute(
            _INSERT_OUTBOX,
            {
                "account_id": account_id,
                "kind": kind,
                "target_id": target_id,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "available_at": moment + delay,
                "created_at": moment,
                "updated_at": moment,
            },
        )
        self.enqueued = True

    def enqueue_once(
        self, *, account_id: str, kind: str, target_id: str, delay: float = 0.0
    ) -> None:
        """One pending job per target: a waiting row is made due by ``delay`` from now if
        that is sooner, else a row is added (with an empty payload).

        A row being worked on does not count: the change it did not see gets a run of its
        own. Kinds that must not overlap with themselves are serial (``Handler.serial``:
        that run waits until the one going on is done); a job that reads the newest
        state when it runs (a presence write) needs nothing more.
        """
        self._require_open()
        moment = time.time()
        at = moment + delay
        reused = self.conn.execute(
            make_waiting_row_due(
                account_id=account_id,
                kind=kind,
                target_id=target_id,
                at=literal(at),
                moment=literal(moment),
            )
        )
        if reused.rowcount == 0:
            self.enqueue(
                account_id=account_id, kind=kind, target_id=target_id, payload={}, delay=delay
            )
        elif delay <= 0:
            # A waiting row made due now: this process's worker looks at once.
            self.enqueued = True

    def _require_open(self) -> None:
        raw = self.conn.connection.driver_connection
        if not self.conn.in_transaction() or not getattr(raw, "in_transaction", True):
            raise RuntimeError("an event or outbox row is written only inside Database.transact")
