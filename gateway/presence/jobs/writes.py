"""CloudLink presence into Teams: ``presence.write`` rows, sent as ``$batch`` of setPresence.

Mapping (Graph accepts only some pairs in a presence session): Available → Available /
Available; Busy in a conference → Busy / InAConferenceCall, any other Busy → Busy /
InACall; DoNotDisturb → DoNotDisturb / Presenting; Away and BeRightBack → Away / Away;
Offline → the gateway's session is cleared (``clearPresence``), so Teams shows what the
user's own clients say. The session id is the app's client id. Sessions rather than the
user's preferred presence: preferred presence is the user's own choice in Teams and
overrides every session; CloudLink reports what the user is doing (a call, a meeting),
which is what sessions are for.

A session lasts ``expirationDuration`` (one hour here), and an Available one fades after
five minutes unless it is written again, so each write leaves a refresh row behind it
(four minutes for Available, fifty for the others); a newer change makes that row due at
once and its handler sends the newest state.

Rows of one tenant are grouped into ``$batch`` requests of up to 20, and a token bucket
keeps the process within its share of Graph's presence budget (1,500 requests per 30 s
per app and tenant, divided among the worker processes). An item throttled on its own
(429 in the batch answer) is retried by the outbox after its ``Retry-After``. A batch
refused as a whole is sent again item by item (``TenantBatcher``), so that only a write
Graph refuses on its own becomes a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, select, update

from gateway.clients.graph import MAX_BATCH, BatchRequest, BatchResponse, GraphApi, GraphUser
from gateway.clients.http import ProviderError
from gateway.clients.identity import AppCredentials, IdentityPlatform
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Dropped, Handler, Settle
from gateway.presence.jobs.directory import LOOKUP_AGAIN
from gateway.presence.jobs.graph import (
    Budgets,
    TenantBatcher,
    refused_as_a_whole,
    send_batch,
    with_app_token,
)
from gateway.presence.models import CLOUDLINK
from gateway.presence.service import WRITE, states_of
from gateway.presence.teams import TeamsConfig, teams_config
from gateway.security import SecretBox
from storage.engine import Database
from storage.outbox import Claimed
from storage.tables import PRESENCE_USERS, utcnow
from storage.transaction import Transaction

SESSION = "PT1H"
REFRESH_AVAILABLE = 240.0
REFRESH_OTHER = 3000.0


def teams_request(
    availability: str, activity: str, *, client_id: str, user_id: str
) -> BatchRequest:
    """The Graph call that shows this CloudLink state in Teams.

    Its id is the user's; the batch it joins numbers its items anew (``send_batch``).
    """
    base = f"/users/{quote(user_id, safe='')}/presence"
    if availability == "Offline":
        return BatchRequest(user_id, "POST", base + "/clearPresence", {"sessionId": client_id})
    if availability in ("Available", "AvailableIdle"):
        pair = ("Available", "Available")
    elif availability in ("Busy", "BusyIdle"):
        pair = ("Busy", "InAConferenceCall" if activity == "InAConferenceCall" else "InACall")
    elif availability == "DoNotDisturb":
        pair = ("DoNotDisturb", "Presenting")
    else:
        pair = ("Away", "Away")
    return BatchRequest(
        user_id,
        "POST",
        base + "/setPresence",
        {
            "sessionId": client_id,
            "availability": pair[0],
            "activity": pair[1],
            "expirationDuration": SESSION,
        },
    )


class PresenceWriter:
    """Groups the writes of each tenant into ``$batch`` requests within its budget."""

    def __init__(self, graph: GraphApi, identity: IdentityPlatform, budgets: Budgets) -> None:
        self.graph = graph
        self.identity = identity

        async def send(creds: AppCredentials, items: list[BatchRequest]) -> list[BatchResponse]:
            return await with_app_token(
                identity, creds, lambda token: send_batch(graph, token, items)
            )

        self._batcher: TenantBatcher[BatchRequest, BatchResponse] = TenantBatcher(
            send, budgets, size=MAX_BATCH, cost=lambda count: count, alone=refused_as_a_whole
        )
        self._users: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, user_id: str) -> AsyncIterator[None]:
        """The writes of one user in this process, one after the other, so that a newer
        state is never overtaken by an older one still on its way."""
        lock = self._users.setdefault(user_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._users.get(user_id) is lock:
                del self._users[user_id]

    async def write(self, creds: AppCredentials, request: BatchRequest) -> BatchResponse:
        """Send one request in the tenant's next batch; its own answer."""
        return await self._batcher.submit(creds, request)


@dataclass(frozen=True)
class _Plan:
    config: TeamsConfig
    email: str
    teams_user_id: str | None
    looked_up_at: float | None
    state: tuple[str, str]
    version: int
    written: dict[str, Any] | None


def _plan(conn: Connection, secrets: SecretBox, row: Claimed) -> _Plan:
    user = conn.execute(
        select(PRESENCE_USERS).where(PRESENCE_USERS.c.id == row.target_id)
    ).one_or_none()
    if user is None:
        raise Dropped("the user's presence was removed")
    config = teams_config(conn, secrets, user.account_id)
    if config is None or not config.presence_to_teams:
        raise Dropped("the account no longer writes presence into Teams")
    state = states_of(conn, user.id).get(CLOUDLINK)
    if state is None:
        raise Dropped("no CloudLink presence to write")
    return _Plan(
        config,
        user.email,
        user.teams_user_id,
        user.looked_up_at,
        (state.availability, state.activity),
        state.version,
        user.written,
    )


def _answer_error(answer: BatchResponse) -> ProviderError:
    body: dict[str, Any] = answer.body if isinstance(answer.body, dict) else {}
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(error.get("code") or answer.status)
    message = str(error.get("message") or "")
    retryable = answer.status in (408, 429) or answer.status >= 500
    return ProviderError(
        f"setPresence: Graph answered {answer.status} {code}: {message}",
        retryable=retryable,
        status=answer.status,
        code=code,
        retry_after=answer.retry_after,
    )


def presence_write_handler(
    db: Database,
    secrets: SecretBox,
    writer: PresenceWriter,
    policy: RetryPolicy,
) -> Handler:
    """Write the newest CloudLink state of a user into Teams."""

    async def run(row: Claimed) -> Settle | None:
        async with writer.one_at_a_time(row.target_id):
            return await write(row)

    async def write(row: Claimed) -> Settle | None:
        plan = await db.query(_plan, secrets, row)
        creds = plan.config.credentials
        teams_user_id = plan.teams_user_id
        looked_up = plan.looked_up_at
        if teams_user_id is None:
            if looked_up is not None and time.time() - looked_up < LOOKUP_AGAIN:
                raise Dropped("the user is not in the tenant's directory")
            email = plan.email

            async def look_up(token: str) -> GraphUser | None:
                return await writer.graph.user(token, email)

            found = await with_app_token(writer.identity, creds, look_up)
            looked_up = time.time()
            teams_user_id = found.id if found is not None else None
            if teams_user_id is None:
                await db.transact(lambda tx: _remember_lookup(tx, row.target_id, None, looked_up))
                raise Dropped("the user is not in the tenant's directory")
        request = teams_request(*plan.state, client_id=creds.client_id, user_id=teams_user_id)
        body = request.body or {}
        pair = (body.get("availability"), body.get("activity"))
        previous = plan.written or {}
        if body.get("availability") is None:
            written: dict[str, Any] | None = None  # cleared: Teams shows the user's own clients
        elif (previous.get("availability"), previous.get("activity")) == pair:
            written = previous  # a refresh: Teams shows this already, no echo to expect
        else:
            written = {"availability": pair[0], "activity": pair[1], "at": time.time()}
        if written is not None:
            written = {**written, "version": plan.version}
        # Recorded before Graph is called, so that its echo is recognised whenever it comes;
        # a write of an older state than one recorded already (another process) stops here.
        if not await db.transact(
            lambda tx: _record_write(
                tx, row.target_id, teams_user_id, looked_up, written=written, plan=plan
            )
        ):
            raise Dropped("a newer state of the user was written meanwhile")
        answer = await writer.write(creds, request)
        cleared = request.url.endswith("/clearPresence") and answer.status == 404
        if not answer.ok and not cleared:
            raise _answer_error(answer)

        def settle(tx: Transaction) -> None:
            if written is not None:
                delay = REFRESH_AVAILABLE if pair[0] == "Available" else REFRESH_OTHER
                tx.enqueue_once(
                    account_id=row.account_id, kind=WRITE, target_id=row.target_id, delay=delay
                )

        return settle

    return Handler(run=run, policy=policy)


def _record_write(
    tx: Transaction,
    user_id: str,
    teams_user_id: str | None,
    looked_up_at: float | None,
    *,
    written: dict[str, Any] | None,
    plan: _Plan,
) -> bool:
    """Record the state about to be written, unless a newer one was recorded already."""
    query = select(PRESENCE_USERS.c.written).where(PRESENCE_USERS.c.id == user_id)
    if tx.conn.dialect.name == "postgresql":
        query = query.with_for_update()
    current = tx.conn.execute(query).scalar_one_or_none() or {}
    if int(current.get("version", 0)) > plan.version:
        return False
    _remember_lookup(tx, user_id, teams_user_id, looked_up_at, written=written)
    return True


def _remember_lookup(
    tx: Transaction,
    user_id: str,
    teams_user_id: str | None,
    looked_up_at: float | None,
    *,
    written: dict[str, Any] | None = None,
) -> None:
    """Record the user's Teams id (or that there is none) and the state written last."""
    tx.conn.execute(
        update(PRESENCE_USERS)
        .where(PRESENCE_USERS.c.id == user_id)
        .values(
            teams_user_id=teams_user_id,
            looked_up_at=looked_up_at,
            written=written,
            updated_at=utcnow(),
        )
    )
