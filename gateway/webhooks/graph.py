"""Microsoft Graph's change and lifecycle notifications for presence subscriptions.

The validation handshake (``?validationToken=``) is answered at once with the token as
plain text, touching nothing: Graph allows 10 seconds and creating a subscription waits
on it. A notification POST carries items of possibly many subscriptions; each item is
checked on its own against its subscription's ``clientState``, which names the monitor
(``MONITOR_ID.SECRET``; the secret is kept as a digest), so that an item is recognised even
before the subscription's id is recorded. Items that fail are dropped, the others stored:
a basic notification (only the user's id, Graph's behaviour since 2024) leaves one pending
``presence.read`` per user, read back in batches by the outbox; a rich one's state is
stored with the others of the POST, once however often Graph delivers it. The answer, 202, goes
after that commit; nothing stored means no 202 (a 5xx, and Graph delivers again).

Lifecycle items (``reauthorizationRequired``, ``subscriptionRemoved``, ``missed``) mark
the monitor for a resync and make its upkeep job due now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gateway.presence.from_teams import apply_graph_presences
from gateway.presence.monitors import needs_resync
from gateway.presence.service import read_back
from gateway.security import token_matches
from gateway.ttl_cache import TtlCache
from gateway.web.bodies import NulPolicy, decode_json_object, read_body
from gateway.web.errors import BadRequest
from gateway.web.state import app_state
from gateway.webhooks.graph_data import resource_data
from storage.tables import PRESENCE_MONITORS, WEBHOOK_RECEIPTS
from storage.transaction import Transaction
from storage.upsert import insert_if_absent

log = structlog.get_logger("gateway.webhooks.graph")

MAX_BODY = 4 * 1024 * 1024
MAX_ITEMS = 1000
MAX_TOKEN = 1024
UUID_CHARACTERS = frozenset("0123456789abcdef-")


@dataclass(frozen=True)
class Watcher:
    """What an item's clientState is checked against: its monitor's account and digest."""

    monitor_id: str
    account_id: str
    client_state: str | None
    tenant_id: str | None
    client_id: str | None


def _watcher(conn: Connection, monitor_id: str) -> Watcher | None:
    row = conn.execute(
        select(
            PRESENCE_MONITORS.c.id,
            PRESENCE_MONITORS.c.account_id,
            PRESENCE_MONITORS.c.client_state,
            PRESENCE_MONITORS.c.tenant_id,
            PRESENCE_MONITORS.c.client_id,
        ).where(PRESENCE_MONITORS.c.id == monitor_id)
    ).one_or_none()
    if row is None:
        return None
    return Watcher(row.id, row.account_id, row.client_state, row.tenant_id, row.client_id)


def handshake(request: Request) -> Response | None:
    """The answer to Graph's validation request, if this is one."""
    token = request.query_params.get("validationToken")
    if token is None:
        return None
    return PlainTextResponse(token[:MAX_TOKEN], headers={"Cache-Control": "no-store"})


async def _payload(request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The notification document and its items."""
    # Syntax and depth checked as for every JSON body; a NUL is replaced (decision 0015).
    payload = decode_json_object(await read_body(request, limit=MAX_BODY), nul=NulPolicy.REPLACE)
    value = payload.get("value")
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise BadRequest(f"The notification body needs a value list of at most {MAX_ITEMS}.")
    return payload, [item for item in value if isinstance(item, dict)]


async def _checked(
    request: Request, items: list[dict[str, Any]]
) -> list[tuple[Watcher, dict[str, Any]]]:
    """The items whose clientState is their monitor's, each with its monitor."""
    state = app_state(request)
    cache: TtlCache[Watcher | None] = request.state.graph_watchers
    kept: list[tuple[Watcher, dict[str, Any]]] = []
    refused = 0
    for item in items:
        presented = item.get("clientState")
        monitor_id, _, secret = str(presented or "").partition(".")
        if not _is_uuid(monitor_id) or not secret or len(secret) > MAX_TOKEN:
            refused += 1
            continue

        async def load(key: str = monitor_id) -> Watcher | None:
            return await state.db.query(_watcher, key)

        watcher = await cache.get(monitor_id, load)
        if watcher is not None and not _matches(watcher, secret):
            # The subscription may have been replaced since this was cached.
            watcher = await cache.get(monitor_id, load, fresh=True)
        if watcher is None or not _matches(watcher, secret):
            refused += 1
            continue
        kept.append((watcher, item))
    if refused:
        log.warning("graph_items_refused", reason="client_state", count=refused)
    return kept


def _is_uuid(value: str) -> bool:
    return len(value) == 36 and UUID_CHARACTERS.issuperset(value.lower())


def _matches(watcher: Watcher, secret: str) -> bool:
    return bool(watcher.client_state) and token_matches(secret, str(watcher.client_state))


def _user_id(item: dict[str, Any]) -> str | None:
    data = item.get("resourceData")
    found = None
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        found = str(data["id"])
    else:
        resource = str(item.get("resource") or "")
        if "('" in resource and resource.endswith("')"):
            found = resource.split("('", 1)[1][:-2]
    # Teams user ids are object ids (GUIDs); anything else names no user.
    return found.lower() if found is not None and _is_uuid(found.lower()) else None


def _first_delivery(tx: Transaction, watcher: Watcher, item: dict[str, Any]) -> bool:
    """Whether this rich item is new, not Graph delivering again a POST it thinks failed.

    Each item's ``dataSignature`` is an HMAC under a key drawn for it, so it names the
    item; it is remembered (for days, like webhook receipts) per monitor. A replayed
    sequence of states would otherwise be reported again as changes.
    """
    signature = str(item["encryptedContent"].get("dataSignature") or "")[:100]
    return insert_if_absent(
        tx.conn,
        WEBHOOK_RECEIPTS,
        {"channel_id": watcher.monitor_id, "key": "graph:" + signature, "received_at": time.time()},
    )


async def notifications(request: Request) -> tuple[Response, str]:
    """POST /webhooks/graph/notifications: store what changed, then 202."""
    answer = handshake(request)
    if answer is not None:
        return answer, "validation"
    payload, items = await _payload(request)
    kept = await _checked(request, items)
    rich = [(w, item) for w, item in kept if isinstance(item.get("encryptedContent"), dict)]
    basic = [(w, item) for w, item in kept if not isinstance(item.get("encryptedContent"), dict)]
    presences: list[tuple[Watcher, dict[str, Any], dict[str, Any]]] = []
    if rich:
        presences, unread = await resource_data(request, payload, rich)
        basic.extend(unread)
    reads = {
        (watcher.account_id, user_id)
        for watcher, item in basic
        if (user_id := _user_id(item)) is not None
    }
    if presences or reads:

        def work(tx: Transaction) -> None:
            by_account: dict[str, list[dict[str, Any]]] = {}
            for watcher, item, presence in presences:
                if _first_delivery(tx, watcher, item):
                    by_account.setdefault(watcher.account_id, []).append(presence)
            for account_id, found in sorted(by_account.items()):
                apply_graph_presences(tx, account_id, found)
            for account_id, user_id in sorted(reads):
                read_back(tx, account_id, user_id)

        await app_state(request).db.transact(work)
    return Response(status_code=202), "accepted" if kept else "ignored"


async def lifecycle(request: Request) -> tuple[Response, str]:
    """POST /webhooks/graph/lifecycle: a subscription needs care; its upkeep runs now."""
    answer = handshake(request)
    if answer is not None:
        return answer, "validation"
    _, items = await _payload(request)
    kept = await _checked(request, items)
    monitors = {(watcher.account_id, watcher.monitor_id) for watcher, _ in kept}
    for _, item in kept:
        log.info("graph_lifecycle", lifecycle_event=str(item.get("lifecycleEvent"))[:40])
    if monitors:

        def work(tx: Transaction) -> None:
            for account_id, monitor_id in sorted(monitors):
                needs_resync(tx, account_id, monitor_id)

        await app_state(request).db.transact(work)
    return Response(status_code=202), "accepted" if kept else "ignored"
