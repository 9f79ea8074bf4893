"""Grouping the Graph calls of many outbox rows: per tenant, in batches, within a budget.

Each outbox row is handled on its own (claimed, retried, settled alone), but Graph is
called for many of them at once: a presence write joins a ``$batch`` of up to 20, a
presence read a ``getPresencesByUserId`` of up to 650 ids. A ``TenantBatcher`` collects
what the rows of one tenant submit within a short window and hands each row its own
answer. Both kinds share one token bucket per tenant: Graph's presence budget (1,500
requests per 30 s per app and tenant) is counted across them, divided among the gateway's
processes.

A ``$batch`` is composed by ``send_batch`` alone, which numbers its items: Graph refuses
a whole batch whose request ids repeat, and the rows that meet in one batch know nothing
of each other. A batch Graph refuses as a whole (a 4xx other than the token's) says
nothing about its items, so the batcher sends each of them again on its own: one item's
fault, or the batch's, does not become every row's dead letter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import Connection, select

from gateway.clients.graph import MAX_PRESENCE_IDS, BatchRequest, BatchResponse, GraphApi
from gateway.clients.http import ProviderError
from gateway.clients.identity import AccessToken, AppCredentials, IdentityPlatform
from gateway.outbox.throttle import SharedBucket, SharedBuckets, TokenBucket
from gateway.outbox.worker import Dropped
from gateway.presence.monitors import LIVE
from gateway.presence.teams import TeamsConfig, teams_config
from gateway.security import SecretBox
from storage.engine import Database
from storage.rows import MonitorRow
from storage.tables import PRESENCE_MONITORS, utcnow

log = structlog.get_logger("gateway.presence.jobs")

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")

BUDGET = 1500
BUDGET_SECONDS = 30.0
WINDOW = 0.02


class Budgets:
    """One presence budget per (tenant, app): Graph's, shared by every replica through the
    database when there is one (``db``), else this process's share of it."""

    def __init__(self, *, processes: int, db: Database | None = None) -> None:
        whole = BUDGET / BUDGET_SECONDS
        self.rate = whole if db is not None else whole / max(1, processes)
        self._shared = (
            SharedBuckets(db, whole, max(20.0, whole), namespace="graph-presence")
            if db is not None
            else None
        )
        self._buckets: dict[tuple[str, str], TokenBucket | SharedBucket] = {}

    def of(self, creds: AppCredentials) -> TokenBucket | SharedBucket:
        """The bucket of the app's tenant."""
        key = (creds.tenant_id, creds.client_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = (
                SharedBucket(self._shared, f"{creds.tenant_id}:{creds.client_id}")
                if self._shared is not None
                else TokenBucket(self.rate, burst=max(20.0, self.rate))
            )
            self._buckets[key] = bucket
        return bucket


async def with_app_token(
    identity: IdentityPlatform, creds: AppCredentials, call: Callable[[str], Awaitable[A]]
) -> A:
    """``call`` with the app's token; a 401 (a revoked or rotated secret) gets a fresh one."""
    token: AccessToken = await identity.app_token(creds)
    try:
        return await call(token.token)
    except ProviderError as exc:
        if exc.status != 401:
            raise
    token = await identity.app_token(creds, fresh=True)
    return await call(token.token)


async def send_batch(
    graph: GraphApi, token: str, items: Sequence[BatchRequest]
) -> list[BatchResponse]:
    """``items`` as one ``$batch``, numbered 1..n there whatever ids they came with; each
    item's answer in the order given, under the item's own id.

    The rows whose requests meet in a batch are handled apart and cannot agree on ids,
    and Graph refuses the whole batch (400) when two ids repeat.
    """
    numbered = [replace(item, id=str(number)) for number, item in enumerate(items, 1)]
    answers = await graph.batch(token, numbered)
    return [replace(answer, id=item.id) for item, answer in zip(items, answers, strict=True)]


def refused_as_a_whole(exc: BaseException) -> bool:
    """Whether a failed call was refused for what it carried: a final 4xx other than 401
    and 403 (the token's or the app's, which every item alone would meet as well).

    Retryable failures (429, 5xx, no answer) are not: each row retries on its own.
    """
    return (
        isinstance(exc, ProviderError)
        and not exc.retryable
        and exc.status is not None
        and 400 <= exc.status < 500
        and exc.status not in (401, 403)
    )


def never(_exc: BaseException) -> bool:
    """No failure makes the items of a call worth sending alone."""
    return False


@dataclass
class _Pending(Generic[T, R]):
    item: T
    answer: asyncio.Future[R]


@dataclass
class _Queue(Generic[T, R]):
    creds: AppCredentials
    waiting: list[_Pending[T, R]] = field(default_factory=list)
    flushing: asyncio.Task[None] | None = None


class TenantBatcher(Generic[T, R]):
    """Submit items one by one; ``send`` gets up to ``size`` of one tenant at a time and
    answers one result per item, in order. ``cost`` is what a batch spends of the budget.

    When ``send`` fails for several items with an error ``alone`` accepts, each item is
    sent again on its own (spending the budget again), and gets its own answer or error.
    """

    def __init__(
        self,
        send: Callable[[AppCredentials, list[T]], Awaitable[list[R]]],
        budgets: Budgets,
        *,
        size: int,
        cost: Callable[[int], int],
        alone: Callable[[BaseException], bool] = never,
    ) -> None:
        self._send = send
        self._budgets = budgets
        self._size = size
        self._cost = cost
        self._alone = alone
        self._queues: dict[tuple[str, str, str], _Queue[T, R]] = {}

    async def submit(self, creds: AppCredentials, item: T) -> R:
        """The item's answer, from the tenant's next batch."""
        key = (creds.tenant_id, creds.client_id, creds.client_secret)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(creds)
        pending: _Pending[T, R] = _Pending(item, asyncio.get_running_loop().create_future())
        queue.waiting.append(pending)
        if queue.flushing is None or queue.flushing.done():
            queue.flushing = asyncio.create_task(self._flush(queue))
        return await pending.answer

    async def _flush(self, queue: _Queue[T, R]) -> None:
        await asyncio.sleep(WINDOW)
        while queue.waiting:
            group, queue.waiting = queue.waiting[: self._size], queue.waiting[self._size :]
            await self._call(queue.creds, group)

    async def _call(self, creds: AppCredentials, group: list[_Pending[T, R]]) -> None:
        """Send ``group`` in one call and answer each of its items."""
        await self._budgets.of(creds).take(self._cost(len(group)))
        try:
            answers = await self._send(creds, [pending.item for pending in group])
        except Exception as exc:
            if len(group) > 1 and self._alone(exc):
                log.warning("graph_batch_refused", items=len(group), error=str(exc)[:300])
                await asyncio.gather(*(self._call(creds, [pending]) for pending in group))
                return
            # The whole call failed: each row retries (or gives up) on its own.
            for pending in group:
                if not pending.answer.done():
                    pending.answer.set_exception(exc)
            return
        for pending, answer in zip(group, answers, strict=True):
            if not pending.answer.done():
                pending.answer.set_result(answer)


@dataclass(frozen=True)
class GraphTools:
    """What the subscription jobs use: the database, the key ring, the Microsoft clients."""

    db: Database
    secrets: SecretBox
    graph: GraphApi
    identity: IdentityPlatform
    public_url: str
    budgets: Budgets
    upkeep_every: float = 120.0
    resource_data: bool = True


def live_monitor(conn: Connection, monitor_id: str) -> MonitorRow:
    """The monitor's row, for a job of its own (``Dropped`` when it is gone or signed out)."""
    monitor = conn.execute(
        select(PRESENCE_MONITORS).where(PRESENCE_MONITORS.c.id == monitor_id)
    ).one_or_none()
    if monitor is None or monitor.status not in LIVE:
        raise Dropped("the monitor is gone or not authorized")
    return monitor


def presence_config(conn: Connection, secrets: SecretBox, account_id: str) -> TeamsConfig:
    """The account's Teams app, for a job that brings Teams presence in (``Dropped`` when
    the account no longer does)."""
    config = teams_config(conn, secrets, account_id)
    if config is None or not config.presence_from_teams:
        raise Dropped("the account no longer carries Teams presence")
    return config


async def read_presences(
    tools: GraphTools, creds: AppCredentials, user_ids: list[str]
) -> tuple[datetime, list[dict[str, Any]]]:
    """When the read began, and the presence of the users read back with the app token
    (650 a call, spent from the tenant's budget like every other read)."""
    await tools.budgets.of(creds).take(-(-len(user_ids) // MAX_PRESENCE_IDS))
    read_at = utcnow()

    async def read(token: str) -> list[dict[str, Any]]:
        return await tools.graph.presences(token, user_ids)

    return read_at, await with_app_token(tools.identity, creds, read)
