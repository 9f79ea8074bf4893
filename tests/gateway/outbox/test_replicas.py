"""Every kind of background job runs on exactly one replica, and a dead replica's jobs
are taken over once their leases end.

Each replica is an outbox worker of its own (its own owner id) on the one database, as
several gateway processes are. The kinds are those the app registers (replies, event
deliveries, every Teams presence job: upkeep, directory, reads, writes, sync, ...), each
run by a recording handler, so that the check covers each kind the app has, not one.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

from sqlalchemy import func, insert, select

from gateway.app import outbox_handlers
from gateway.channels.service import CLEAR_SMS_URL
from gateway.chat.service import SEND
from gateway.clients.providers import Providers
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Handler, OutboxWorker, WorkerSettings
from gateway.presence.monitors import DIRECTORY, SYNC, UNSUBSCRIBE, UPKEEP
from gateway.secret_keys import load_secret_keys
from gateway.security import SecretBox
from gateway.settings import Settings
from observability.metrics import Metrics
from storage import outbox
from storage.engine import Database
from storage.outbox import Claimed
from storage.tables import ACCOUNTS, OUTBOX, utcnow
from storage.transaction import Transaction
from tests.support.sync import run

QUICK = RetryPolicy(attempts=3, base=0.01, cap=0.02)
PER_KIND = 12


def every_kind(db: Database, settings: Settings) -> list[str]:
    """The kinds of outbox rows the app registers handlers for."""

    async def kinds() -> list[str]:
        providers = Providers.from_settings(settings)
        try:
            secrets = SecretBox(load_secret_keys(settings))
            return sorted(outbox_handlers(db, secrets, providers, settings))
        finally:
            await providers.close()

    return run(kinds())


def _queue_every_kind(db: Database, kinds: list[str]) -> None:
    account_id = str(uuid.uuid4())

    def work(tx: Transaction) -> None:
        now = utcnow()
        tx.conn.execute(
            insert(ACCOUNTS).values(id=account_id, name="r", created_at=now, updated_at=now)
        )
        for kind in kinds:
            for index in range(PER_KIND):
                tx.enqueue(account_id=account_id, kind=kind, target_id=str(index), payload={})

    run(db.transact(work))


def _pending(db: Database) -> int:
    return run(
        db.query(lambda conn: conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one())
    )


def _recording(kinds: list[str], ran: list[tuple[str, str, str]], owner: str) -> dict[str, Handler]:
    def handler(kind: str) -> Handler:
        async def deliver(row: Claimed) -> Any:
            ran.append((kind, row.target_id, owner))
            await asyncio.sleep(0.01)

        return Handler(run=deliver, policy=QUICK)

    return {kind: handler(kind) for kind in kinds}


async def _run_until_empty(db: Database, workers: list[OutboxWorker], timeout: float = 30) -> None:
    for worker in workers:
        worker.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while await db.query(
            lambda conn: conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one()
        ):
            assert asyncio.get_running_loop().time() < deadline, "rows left undelivered"
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            await worker.stop()


def test_each_job_of_every_kind_runs_on_exactly_one_of_three_replicas(
    db: Database, settings: Settings
) -> None:
    kinds = every_kind(db, settings)
    assert {SEND, CLEAR_SMS_URL, UPKEEP, DIRECTORY, SYNC, UNSUBSCRIBE} <= set(kinds), kinds
    _queue_every_kind(db, kinds)
    ran: list[tuple[str, str, str]] = []
    workers = [
        OutboxWorker(
            db,
            _recording(kinds, ran, f"replica-{n}"),
            Metrics(),
            WorkerSettings(poll=0.02, concurrency=4),
            owner=f"replica-{n}",
        )
        for n in range(3)
    ]
    run(_run_until_empty(db, workers))
    runs = collections.Counter((kind, target) for kind, target, _ in ran)
    assert set(runs) == {(kind, str(i)) for kind in kinds for i in range(PER_KIND)}
    assert set(runs.values()) == {1}, [job for job, count in runs.items() if count > 1]
    assert len({owner for _, _, owner in ran}) > 1, "the replicas shared the work"


def test_a_dead_replicas_jobs_of_every_kind_are_taken_over_after_their_lease(
    db: Database, settings: Settings
) -> None:
    """Claimed by a replica that then died: left alone while the lease holds, run once by
    another replica after it."""
    kinds = every_kind(db, settings)
    _queue_every_kind(db, kinds)
    lease = 1.5
    claimed = run(
        db.transact(
            lambda tx: outbox.claim(
                tx.conn, owner="dead", moment=outbox.now(), lease=lease, limit=10_000
            )
        )
    )
    assert len(claimed) == len(kinds) * PER_KIND
    ran: list[tuple[str, str, str]] = []
    survivor = OutboxWorker(
        db, _recording(kinds, ran, "survivor"), Metrics(), WorkerSettings(poll=0.02)
    )

    async def scenario() -> None:
        survivor.start()
        await asyncio.sleep(lease / 3)
        assert ran == [], "a job was taken while its lease held"
        await survivor.stop()
        await _run_until_empty(
            db,
            [
                OutboxWorker(
                    db, _recording(kinds, ran, "survivor"), Metrics(), WorkerSettings(poll=0.02)
                )
            ],
        )

    run(scenario())
    runs = collections.Counter((kind, target) for kind, target, _ in ran)
    assert {kind for kind, _ in runs} == set(kinds)
    assert set(runs.values()) == {1}
    assert _pending(db) == 0
