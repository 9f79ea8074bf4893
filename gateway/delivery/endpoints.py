"""CloudLink endpoints of an account, and the dead letters of its deliveries.

An endpoint's secret is generated here (``whsec_`` + 32 random bytes, the Standard
Webhooks form), shown once, kept encrypted. Its URL must be https to a public address
unless private endpoints are allowed; the check resolves the name now and again at
every delivery.

Dead letters are listed a page at a time, most recently failed first, and a page ends
with a cursor: the last letter's failure time and id, where the next page starts.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from secrets import token_bytes
from typing import Any

from sqlalchemy import Connection, delete, insert, select, tuple_, update

from gateway.accounts.service import admin_event, require_account
from gateway.clients.cloudlink import SECRET_PREFIX
from gateway.clients.destinations import UnsafeDestination, check_destination
from gateway.delivery.models import DeadLetter, EndpointCreated, EndpointOut
from gateway.events.service import Actor
from gateway.outbox.worker import Handler
from gateway.security import SecretBox
from gateway.web.errors import InvalidValue, NotFound, Unprocessable, shown
from storage import outbox
from storage.engine import Database
from storage.outbox import DEAD
from storage.rows import EndpointRow
from storage.tables import ENDPOINTS, OUTBOX, utcnow
from storage.transaction import EVENT_DELIVERY, Transaction

SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks signing secret."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


def _out(row: EndpointRow) -> EndpointOut:
    return EndpointOut(
        id=row.id,
        url=row.url,
        status=row.status,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def add_endpoint(
    db: Database,
    *,
    secrets: SecretBox,
    account_id: str,
    url: str,
    allow_private: bool,
    actor: Actor,
) -> EndpointCreated:
    """Add an endpoint; events from now on are delivered to it."""
    url = url.strip()
    try:
        await check_destination(url, allow_private=allow_private)
    except UnsafeDestination as exc:
        raise Unprocessable(f"url: {exc}.") from exc
    secret = new_secret()
    encrypted = secrets.encrypt(secret)
    endpoint_id = str(uuid.uuid4())

    def work(tx: Transaction) -> EndpointOut:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        moment = utcnow()
        tx.conn.execute(
            insert(ENDPOINTS).values(
                id=endpoint_id,
                account_id=account_id,
                url=url,
                secret=encrypted,
                status="enabled",
                created_at=moment,
                updated_at=moment,
            )
        )
        admin_event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Create",
            asset="Endpoint",
            asset_id=endpoint_id,
            type="endpoint.created",
            properties_changed=["url"],
            details={"id": endpoint_id, "url": url},
        )
        return _out(_endpoint(tx.conn, account_id, endpoint_id))

    created = await db.transact(work)
    return EndpointCreated(**created.model_dump(), secret=secret)


def _endpoint(conn: Connection, account_id: str, endpoint_id: str) -> EndpointRow:
    row = conn.execute(
        select(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id, ENDPOINTS.c.account_id == account_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"No endpoint {shown(endpoint_id)!r} in this account.")
    return row


async def list_endpoints(db: Database, *, account_id: str) -> list[EndpointOut]:
    """The account's endpoints, oldest first (secrets never included)."""

    def read(conn: Connection) -> list[EndpointOut]:
        require_account(conn, account_id)
        rows = conn.execute(
            select(ENDPOINTS)
            .where(ENDPOINTS.c.account_id == account_id)
            .order_by(ENDPOINTS.c.created_at, ENDPOINTS.c.id)
        ).all()
        return [_out(row) for row in rows]

    return await db.query(read)


async def set_endpoint_enabled(
    db: Database, *, account_id: str, endpoint_id: str, enabled: bool, actor: Actor
) -> EndpointOut:
    """Enable (after a 410, once the receiver is back) or disable an endpoint."""

    def work(tx: Transaction) -> EndpointOut:
        tx.lock_account(account_id)
        row = _endpoint(tx.conn, account_id, endpoint_id)
        status = "enabled" if enabled else "disabled"
        if row.status != status:
            tx.conn.execute(
                update(ENDPOINTS)
                .where(ENDPOINTS.c.id == endpoint_id)
                .values(
                    status=status,
                    disabled_reason=None if enabled else f"disabled by {actor.name}",
                    updated_at=utcnow(),
                )
            )
            admin_event(
                tx,
                account_id=account_id,
                actor=actor,
                action="Edit",
                asset="Endpoint",
                asset_id=endpoint_id,
                type="endpoint.enabled" if enabled else "endpoint.disabled",
                properties_changed=["status"],
                details={"id": endpoint_id, "status": status},
            )
        return _out(_endpoint(tx.conn, account_id, endpoint_id))

    return await db.transact(work)


async def remove_endpoint(db: Database, *, account_id: str, endpoint_id: str, actor: Actor) -> None:
    """Remove an endpoint; its pending deliveries are dropped."""

    def work(tx: Transaction) -> None:
        tx.lock_account(account_id)
        _endpoint(tx.conn, account_id, endpoint_id)
        tx.conn.execute(delete(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id))
        tx.conn.execute(
            delete(OUTBOX).where(OUTBOX.c.kind == EVENT_DELIVERY, OUTBOX.c.target_id == endpoint_id)
        )
        admin_event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Delete",
            asset="Endpoint",
            asset_id=endpoint_id,
            type="endpoint.removed",
            properties_changed=["url"],
            details={"id": endpoint_id},
        )

    await db.transact(work)


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=str(row.pk),
        kind=row.kind,
        target_id=row.target_id,
        event_id=row.payload.get("event_id"),
        attempts=row.attempts,
        error=row.last_error,
        created_at=_moment(row.created_at),
        failed_at=_moment(row.updated_at),
    )


CURSOR_PATTERN = "^[0-9]{1,16}([.][0-9]{1,20})?_[0-9]{1,18}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def _cursor(row: Any) -> str:
    """Where a page ended: the last letter's failure time and id.

    The time is written as the shortest decimal that reads back as the same double, so
    the next page compares with exactly the value stored (a rounded one would repeat or
    skip the letters failed within the rounding).
    """
    return f"{Decimal(repr(float(row.updated_at))):f}_{row.pk}"


def _parse_cursor(cursor: str) -> tuple[float, int]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidValue(f"before: {shown(cursor)!r} is not a cursor this API returned.")
    moment, _, pk = cursor.partition("_")
    return float(moment), int(pk)


@dataclass(frozen=True)
class DeadLetterPage:
    """A page of dead letters; ``cursors[i]`` is where a listing continued after
    ``items[i]`` starts, ``next_cursor`` the last one's when more follow (else None)."""

    items: list[DeadLetter]
    cursors: list[str]
    next_cursor: str | None


async def dead_letters(
    db: Database, *, account_id: str, limit: int, before: str | None = None
) -> DeadLetterPage:
    """A page of the account's dead letters, most recently failed first; ``before``
    continues a previous page."""
    after = _parse_cursor(before) if before is not None else None

    def read(conn: Connection) -> DeadLetterPage:
        require_account(conn, account_id)
        query = select(OUTBOX).where(OUTBOX.c.account_id == account_id, OUTBOX.c.status == DEAD)
        if after is not None:
            query = query.where(tuple_(OUTBOX.c.updated_at, OUTBOX.c.pk) < after)
        rows = conn.execute(
            query.order_by(OUTBOX.c.updated_at.desc(), OUTBOX.c.pk.desc()).limit(limit + 1)
        ).all()
        page = rows[:limit]
        cursors = [_cursor(row) for row in page]
        return DeadLetterPage(
            items=[_dead_letter(row) for row in page],
            cursors=cursors,
            next_cursor=cursors[-1] if len(rows) > limit else None,
        )

    return await db.query(read)


def _parse_ids(ids: list[str]) -> list[int]:
    parsed = []
    for value in ids:
        if not value.isdigit() or len(value) > 18:
            raise InvalidValue(f"ids: {shown(value)!r} is not a dead letter id.")
        parsed.append(int(value))
    return parsed


async def replay(
    db: Database,
    *,
    handlers: Mapping[str, Handler],
    account_id: str,
    ids: list[str],
    replay_all: bool,
    actor: Actor,
) -> int:
    """Queue dead letters again, with fresh attempts; the handler of each letter's kind
    takes back what its final failure recorded (a failed reply goes back to pending)."""
    if not replay_all and not ids:
        raise InvalidValue("Name the dead letters to replay (ids), or ask for all.")
    pks = _parse_ids(ids)

    def work(tx: Transaction) -> int:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        rows = outbox.revive(
            tx.conn,
            account_id=account_id,
            pks=None if replay_all else pks,
            actor_name=actor.name,
            actor_id=actor.id,
        )
        if not replay_all and len(rows) != len(set(pks)):
            found = {row.pk for row in rows}
            missing = [str(pk) for pk in pks if pk not in found]
            raise NotFound(f"No dead letter {', '.join(missing)} in this account.")
        if not rows:
            return 0
        for row in rows:
            handler = handlers.get(row.kind)
            if handler is not None and handler.on_replay is not None:
                handler.on_replay(tx, row)
        tx.enqueued = True
        admin_event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Edit",
            asset="Outbox",
            asset_id=None,
            type="outbox.replayed",
            properties_changed=["status"],
            details={"count": len(rows), "ids": [str(row.pk) for row in rows][:100]},
        )
        return len(rows)

    return await db.transact(work)
