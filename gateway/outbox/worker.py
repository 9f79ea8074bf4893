"""The outbox worker of one process: claims due rows with a lease, delivers, settles.

Started and stopped by the app's lifespan. It looks for due rows with a read (an idle
worker never writes), claims what it has room for (``storage.outbox.claim``: SKIP
LOCKED on PostgreSQL), runs each row's handler as its own task, and settles the row in
a transaction of its own: delivered rows are deleted together with whatever the
handler records (a message's new status, its event); failed ones wait for their next
attempt or, out of attempts, become dead letters. A commit of this process that wrote
outbox rows wakes it at once; rows written by other processes are found at the next
poll. On shutdown it stops claiming, lets running deliveries finish for a grace
period, and gives back the claims it could not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Connection

from gateway.clients.http import ProviderError, Unanswered
from gateway.outbox.policy import RetryPolicy
from observability.metrics import Metrics
from storage import outbox
from storage.engine import Database
from storage.errors import DatabaseBusy
from storage.outbox import Claimed, Revived
from storage.transaction import Transaction

log = structlog.get_logger("gateway.delivery")

Settle = Callable[[Transaction], None]
BACKLOG_EVERY = 5.0
# A settling transaction that lost a lock race (a deadlock victim) is tried again.
SETTLE_ATTEMPTS = 3
UPKEEP_EVERY = 600.0


class Dropped(Exception):
    """Nothing is left to deliver (the target was deleted): the row is removed."""


class LeaseLost(Exception):
    """Another worker holds the row now; this worker's result is discarded."""


@dataclass(frozen=True)
class Handler:
    """What a kind of row does: deliver it, record a final failure, and take that record
    back when an operator replays the dead letter (``on_replay`` runs in the replay's
    transaction, once per replayed row of the kind). A ``serial`` kind runs one row per
    target at a time, in every process (``storage.outbox.claim``)."""

    run: Callable[[Claimed], Awaitable[Settle | None]]
    policy: RetryPolicy
    on_dead: Callable[[Transaction, Claimed, ProviderError], None] | None = None
    on_replay: Callable[[Transaction, Revived], None] | None = None
    serial: bool = False


@dataclass
class WorkerSettings:
    """The knobs of ``GATEWAY_OUTBOX_*``."""

    lease: float = 60.0
    poll: float = 0.5
    concurrency: int = 32
    grace: float = 10.0
    upkeep: Callable[[Transaction], None] | None = None
    # Features' gauges of the database, read with the backlog's (every BACKLOG_EVERY
    # seconds) on a reading connection: a cheap aggregate, never a write.
    gauges: Callable[[Connection, Metrics], None] | None = None


@dataclass
class OutboxWorker:
    """Delivers the outbox rows of one database from one process."""

    db: Database
    handlers: Mapping[str, Handler]
    metrics: Metrics
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    owner: str = field(default_factory=lambda: f"{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._running: dict[int, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._next_backlog = 0.0
        self._next_upkeep = time.monotonic() + 5.0
        self._serial = tuple(sorted(kind for kind, h in self.handlers.items() if h.serial))

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Begin polling; commits of this process that enqueue wake the worker."""
        self.db.outbox_listener = self.wake
        self._loop_task = asyncio.create_task(self._loop(), name="outbox-worker")

    def wake(self) -> None:
        """Look for work now (called on the event loop after a commit that enqueued)."""
        self._wake.set()

    def stop_claiming(self) -> None:
        """Claim nothing more (the process drains): deliveries already running go on."""
        self._stopping = True
        self.db.outbox_listener = None
        self._wake.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let deliveries finish for ``grace`` seconds (the settings' grace
        by default), and give back the claims of the rest to other processes."""
        self.stop_claiming()
        if self._loop_task is not None:
            await self._loop_task
        unfinished: list[int] = []
        if self._running:
            _done, pending = await asyncio.wait(
                list(self._running.values()),
                timeout=self.settings.grace if grace is None else grace,
            )
            unfinished = [pk for pk, task in self._running.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if unfinished:
            with contextlib.suppress(Exception):
                await self.db.transact(
                    lambda tx: outbox.release(tx.conn, owner=self.owner, pks=unfinished)
                )
            log.info("outbox_claims_released", rows=len(unfinished))

    # -- the loop ---------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                claimed = await self._claim_some()
                await self._housekeeping()
            except Exception:  # a database that is busy or away must not stop the worker
                log.warning("outbox_poll_failed", exc_info=True)
                claimed = 0
            if claimed and len(self._running) < self.settings.concurrency:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll)

    async def _claim_some(self) -> int:
        room = self.settings.concurrency - len(self._running)
        # Claim in batches: a claim is a write transaction, and one per finished delivery
        # would cost more than the deliveries (wait for a quarter of the room to free up,
        # unless nothing runs).
        if room <= 0 or (self._running and room < max(1, self.settings.concurrency // 4)):
            return 0
        if not await self.db.query(outbox.has_due, outbox.now(), self._serial):
            return 0
        rows = await self.db.transact(
            lambda tx: outbox.claim(
                tx.conn,
                owner=self.owner,
                moment=outbox.now(),
                lease=self.settings.lease,
                limit=room,
                serial=self._serial,
            )
        )
        for row in rows:
            task = asyncio.create_task(self._deliver(row), name=f"outbox-{row.pk}")
            self._running[row.pk] = task
            task.add_done_callback(functools.partial(self._finished, row.pk))
        return len(rows)

    def _finished(self, pk: int, _task: asyncio.Task[None]) -> None:
        self._running.pop(pk, None)
        if not self._stopping:
            self._wake.set()

    async def _housekeeping(self) -> None:
        moment = time.monotonic()
        if moment >= self._next_backlog:
            self._next_backlog = moment + BACKLOG_EVERY
            at = outbox.now()
            found = await self.db.query(outbox.backlog, at)
            self.metrics.outbox_backlog.set(found.due)
            oldest = found.oldest_due_at
            self.metrics.outbox_oldest_age.set(0 if oldest is None else max(0.0, at - oldest))
            self.metrics.outbox_scheduled.set(found.scheduled)
            self.metrics.dead_letters.set(found.dead)
            gauges = self.settings.gauges
            if gauges is not None:
                await self.db.query(gauges, self.metrics)
        upkeep = self.settings.upkeep
        if upkeep is not None and moment >= self._next_upkeep:
            self._next_upkeep = moment + UPKEEP_EVERY
            await self.db.transact(upkeep)

    # -- one row ----------------------------------------------------------------------

    async def _deliver(self, row: Claimed) -> None:
        handler = self.handlers.get(row.kind)
        if handler is None:
            await self._failed(row, None, ProviderError(f"no handler for {row.kind!r}", False))
            return
        try:
            settle = await asyncio.wait_for(handler.run(row), self.settings.lease * 0.8)
        except Dropped as exc:
            await self._settle(row, "dropped", lambda tx: self._complete(tx, row, None))
            log.info("outbox_row_dropped", kind=row.kind, pk=row.pk, reason=str(exc))
            return
        except ProviderError as exc:
            await self._failed(row, handler, exc)
            return
        except TimeoutError:
            await self._failed(row, handler, Unanswered("timed out", retryable=True))
            return
        except Exception as exc:
            log.exception("outbox_handler_bug", kind=row.kind, pk=row.pk)
            await self._failed(row, handler, Unanswered(type(exc).__name__, retryable=True))
            return
        await self._settle(row, "delivered", lambda tx: self._complete(tx, row, settle))

    def _complete(self, tx: Transaction, row: Claimed, settle: Settle | None) -> None:
        if not outbox.complete(tx.conn, pk=row.pk, owner=self.owner):
            raise LeaseLost
        if settle is not None:
            settle(tx)

    async def _failed(self, row: Claimed, handler: Handler | None, exc: ProviderError) -> None:
        error = str(exc)[:1000]
        if handler is not None and exc.retryable and row.attempts < handler.policy.attempts:
            at = outbox.now() + handler.policy.delay(row.attempts, exc.retry_after)

            unanswered = isinstance(exc, Unanswered)

            def retry(tx: Transaction) -> None:
                if not outbox.retry_later(
                    tx.conn, pk=row.pk, owner=self.owner, at=at, error=error, unanswered=unanswered
                ):
                    raise LeaseLost

            await self._settle(row, "retried", retry)
            return

        def bury(tx: Transaction) -> None:
            # The handler's change first: it takes the locks that order concurrent buriers
            # (an endpoint's row before any of its deliveries).
            if handler is not None and handler.on_dead is not None:
                handler.on_dead(tx, row, exc)
            if not outbox.bury(tx.conn, pk=row.pk, owner=self.owner, error=error):
                raise LeaseLost

        await self._settle(row, "dead", bury)
        log.warning("outbox_dead_letter", kind=row.kind, pk=row.pk, error=error)

    async def _settle(self, row: Claimed, outcome: str, work: Settle) -> None:
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                await self.db.transact(work)
            except LeaseLost:
                log.warning("outbox_lease_lost", kind=row.kind, pk=row.pk)
                return
            except DatabaseBusy:
                if attempt + 1 < SETTLE_ATTEMPTS:
                    continue
                log.warning("outbox_settle_failed", kind=row.kind, pk=row.pk, exc_info=True)
                return
            except Exception:
                # The claim runs out and the row is delivered again: at least once.
                log.warning("outbox_settle_failed", kind=row.kind, pk=row.pk, exc_info=True)
                return
            self.metrics.deliveries.labels(row.kind, outcome).inc()
            return
