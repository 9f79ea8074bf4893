"""The outbox worker with handlers of its own: delivered, retried, buried, released."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sqlalchemy import insert, select, update

from gateway.clients.http import ProviderError
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Handler, OutboxWorker, WorkerSettings
from observability.metrics import Metrics
from storage.engine import Database
from storage.outbox import Claimed
from storage.tables import ACCOUNTS, OUTBOX, utcnow
from storage.transaction import Transaction
from tests.support.sync import run

QUICK = RetryPolicy(attempts=3, base=0.01, cap=0.02)


def _queue(db: Database, kind: str, count: int = 1) -> str:
    account_id = str(uuid.uuid4())

    def work(tx: Transaction) -> None:
        now = utcnow()
        tx.conn.execute(
            insert(ACCOUNTS).values(id=account_id, name="w", created_at=now, updated_at=now)
        )
        for index in range(count):
            tx.enqueue(account_id=account_id, kind=kind, target_id=str(index), payload={})

    run(db.transact(work))
    return account_id


def _rows(db: Database) -> list[Any]:
    return run(db.query(lambda conn: list(conn.execute(select(OUTBOX)).all())))


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _worker(db: Database, handlers: dict[str, Handler], **settings: Any) -> OutboxWorker:
    return OutboxWorker(db, handlers, Metrics(), WorkerSettings(poll=0.02, **settings))


def test_delivered_rows_are_deleted_with_what_the_handler_records(db: Database) -> None:
    """A delivered row is gone; the handler's change committed with it."""
    _queue(db, "ok", 3)
    done: list[str] = []

    async def deliver(row: Claimed) -> Any:
        done.append(row.target_id)
        return None

    async def scenario() -> None:
        worker = _worker(db, {"ok": Handler(run=deliver, policy=QUICK)})
        worker.start()
        await _until(lambda: db.query(lambda conn: conn.execute(select(OUTBOX)).first() is None))
        await worker.stop()

    asyncio.run(scenario())
    assert sorted(done) == ["0", "1", "2"]


def test_retryable_failures_retry_then_bury_with_the_handlers_change(db: Database) -> None:
    """A failure that may pass is retried; after the last attempt the row is a dead letter
    and the handler's on_dead ran in the same transaction."""
    _queue(db, "flaky")
    attempts: list[int] = []
    buried: list[str] = []

    async def deliver(row: Claimed) -> Any:
        attempts.append(row.attempts)
        raise ProviderError("HTTP 503", retryable=True, status=503)

    def on_dead(_tx: Transaction, row: Claimed, exc: ProviderError) -> None:
        buried.append(str(exc))

    async def scenario() -> None:
        worker = _worker(db, {"flaky": Handler(run=deliver, policy=QUICK, on_dead=on_dead)})
        worker.start()
        await _until(lambda: db.query(_is_dead))
        await worker.stop()

    asyncio.run(scenario())
    assert attempts == [1, 2, 3]
    assert buried == ["HTTP 503"]
    [row] = _rows(db)
    assert (row.status, row.attempts, row.last_error) == ("dead", 3, "HTTP 503")


def _is_dead(conn: Any) -> bool:
    row = conn.execute(select(OUTBOX.c.status)).first()
    return row is not None and row.status == "dead"


def test_a_final_failure_is_buried_at_once(db: Database) -> None:
    """A 4xx-like refusal is not retried."""
    _queue(db, "refused")

    async def deliver(row: Claimed) -> Any:
        raise ProviderError("HTTP 400", retryable=False, status=400)

    async def scenario() -> None:
        worker = _worker(db, {"refused": Handler(run=deliver, policy=QUICK)})
        worker.start()
        await _until(lambda: db.query(_is_dead))
        await worker.stop()

    asyncio.run(scenario())
    [row] = _rows(db)
    assert row.attempts == 1


def test_stopping_releases_the_claims_it_could_not_finish(db: Database) -> None:
    """A delivery still running when the grace period ends gives its claim back."""
    _queue(db, "slow")
    started = asyncio.Event()

    async def deliver(row: Claimed) -> Any:
        started.set()
        await asyncio.sleep(60)

    async def scenario() -> None:
        worker = _worker(db, {"slow": Handler(run=deliver, policy=QUICK)}, grace=0.05)
        worker.start()
        await asyncio.wait_for(started.wait(), 10)
        await worker.stop()

    asyncio.run(scenario())
    [row] = _rows(db)
    assert (row.status, row.lease_owner, row.attempts) == ("pending", None, 0)


def test_the_gauges_show_due_rows_and_scheduled_rows_apart(db: Database) -> None:
    """A row due in an hour (written long ago) is in the scheduled gauge only; the backlog
    is the due row, and the oldest age is how long that row has been due."""
    account_id = _queue(db, "held")
    moment = time.time()

    def arrange(tx: Transaction) -> None:
        tx.conn.execute(update(OUTBOX).values(available_at=moment - 100, created_at=moment - 100))
        tx.conn.execute(
            insert(OUTBOX).values(
                account_id=account_id,
                kind="held",
                target_id="later",
                payload={},
                status="pending",
                attempts=0,
                available_at=moment + 3600,
                created_at=moment - 1000,
                updated_at=moment - 1000,
            )
        )

    run(db.transact(arrange))
    release = asyncio.Event()

    async def deliver(row: Claimed) -> Any:
        await release.wait()

    metrics = Metrics()

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"cloudlink_gateway_outbox_{name}")

    async def scenario() -> None:
        worker = OutboxWorker(
            db, {"held": Handler(run=deliver, policy=QUICK)}, metrics, WorkerSettings(poll=0.02)
        )
        worker.start()

        async def measured() -> bool:
            return gauge("scheduled") == 1

        await _until(measured)
        release.set()
        await worker.stop()

    asyncio.run(scenario())
    assert gauge("backlog") == 1
    age = gauge("oldest_age_seconds")
    assert age is not None
    assert 100 <= age < 1000
