"""The outbox table: rows written with their change, claimed under a lease, fenced by owner."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import func, insert, select

from storage import outbox
from storage.engine import Database
from storage.tables import ACCOUNTS, ENDPOINTS, OUTBOX, utcnow
from storage.transaction import NewEvent, Transaction
from tests.support.sync import run


def _account(db: Database, endpoints: dict[str, str]) -> str:
    account_id = str(uuid.uuid4())

    def work(tx: Transaction) -> None:
        now = utcnow()
        tx.conn.execute(
            insert(ACCOUNTS).values(id=account_id, name="a", created_at=now, updated_at=now)
        )
        for endpoint_id, status in endpoints.items():
            tx.conn.execute(
                insert(ENDPOINTS).values(
                    id=endpoint_id,
                    account_id=account_id,
                    url="https://example.com/hook",
                    secret="x",
                    status=status,
                    created_at=now,
                    updated_at=now,
                )
            )

    run(db.transact(work))
    return account_id


def _enqueue(db: Database, account_id: str, count: int) -> None:
    def work(tx: Transaction) -> None:
        for index in range(count):
            tx.enqueue(account_id=account_id, kind="test", target_id=str(index), payload={})

    run(db.transact(work))


def _claim(db: Database, owner: str, moment: float, limit: int = 100) -> list[outbox.Claimed]:
    return run(
        db.transact(
            lambda tx: outbox.claim(tx.conn, owner=owner, moment=moment, lease=30, limit=limit)
        )
    )


def test_an_event_fans_out_to_each_enabled_endpoint(db: Database) -> None:
    """One delivery row per enabled endpoint, written in the event's transaction."""
    account_id = _account(db, {"e-on": "enabled", "e-off": "disabled", "e-on2": "enabled"})

    def work(tx: Transaction) -> bool:
        tx.record_event(
            NewEvent(
                id=str(uuid.uuid4()),
                account_id=account_id,
                actor_name="t",
                actor_id=None,
                action="Create",
                event_type="Test",
                asset="Thing",
                asset_id=None,
                type="thing.created",
                properties_changed=[],
                details={},
            )
        )
        return tx.enqueued

    assert run(db.transact(work)) is True
    rows = run(db.query(lambda conn: conn.execute(select(OUTBOX.c.target_id)).scalars().all()))
    assert sorted(rows) == ["e-on", "e-on2"]


def test_a_claim_holds_until_its_lease_ends(db: Database) -> None:
    """Claimed rows are not claimed again while the lease holds; afterwards they are, and
    the first owner can no longer complete them."""
    account_id = _account(db, {})
    _enqueue(db, account_id, 3)
    start = outbox.now()
    first = _claim(db, "worker-a", start)
    assert [row.attempts for row in first] == [1, 1, 1]
    assert _claim(db, "worker-b", start + 1) == []
    taken = _claim(db, "worker-b", start + 31)
    assert sorted(r.pk for r in taken) == sorted(r.pk for r in first)
    assert {row.attempts for row in taken} == {2}
    done = run(db.transact(lambda tx: outbox.complete(tx.conn, pk=first[0].pk, owner="worker-a")))
    assert done is False
    done = run(db.transact(lambda tx: outbox.complete(tx.conn, pk=first[0].pk, owner="worker-b")))
    assert done is True


def test_rows_wait_until_they_are_due(db: Database) -> None:
    """A row retried later is not claimed before its time."""
    account_id = _account(db, {})
    _enqueue(db, account_id, 1)
    moment = outbox.now()
    [row] = _claim(db, "w", moment)
    later = moment + 60
    assert run(
        db.transact(
            lambda tx: outbox.retry_later(tx.conn, pk=row.pk, owner="w", at=later, error="429")
        )
    )
    assert _claim(db, "w", moment + 1) == []
    assert [r.pk for r in _claim(db, "w", later + 1)] == [row.pk]


def test_released_claims_are_due_at_once_with_the_attempt_refunded(db: Database) -> None:
    """Shutdown gives back unfinished claims: another worker takes them immediately."""
    account_id = _account(db, {})
    _enqueue(db, account_id, 2)
    moment = outbox.now()
    claimed = _claim(db, "w1", moment)
    released = run(
        db.transact(lambda tx: outbox.release(tx.conn, owner="w1", pks=[r.pk for r in claimed]))
    )
    assert released == 2
    again = _claim(db, "w2", moment)
    assert {r.attempts for r in again} == {1}


def test_the_backlog_counts_due_rows_and_keeps_scheduled_ones_apart(db: Database) -> None:
    """Rows due later (a refresh, a retry waiting out its backoff) are scheduled, not
    backlog; the oldest due row is the one due longest, however long ago it was written."""
    account_id = _account(db, {})
    moment = 1_700_000_000.0

    def row(available_at: float, created_at: float, **extra: object) -> dict[str, object]:
        values: dict[str, object] = {
            "account_id": account_id,
            "kind": "test",
            "target_id": "t",
            "payload": {},
            "status": outbox.PENDING,
            "attempts": 0,
            "available_at": available_at,
            "created_at": created_at,
            "updated_at": created_at,
        }
        return {**values, **extra}

    rows = [
        row(moment - 30, moment - 30),
        row(moment - 10, moment - 5000, attempts=2),  # a retry, due again
        row(moment - 20, moment - 20, lease_owner="w", lease_until=moment + 30),  # running
        row(moment + 3000, moment - 1000),  # a presence refresh, due later
        row(moment + 5, moment - 50, attempts=1),  # a retry, waiting
        row(moment - 9000, moment - 9000, status=outbox.DEAD),
    ]
    run(db.transact(lambda tx: tx.conn.execute(insert(OUTBOX), rows)))
    found = run(db.query(outbox.backlog, moment))
    assert found == outbox.Backlog(due=3, oldest_due_at=moment - 30, scheduled=2, dead=1)
    later = run(db.query(outbox.backlog, moment + 3000))
    assert (later.due, later.scheduled) == (5, 0)
    assert later.oldest_due_at == moment - 30


def test_concurrent_claims_take_disjoint_rows(db: Database) -> None:
    """Claims racing from several threads (PostgreSQL: SKIP LOCKED) never share a row."""
    account_id = _account(db, {})
    _enqueue(db, account_id, 200)
    moment = outbox.now()
    results: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def claimer(owner: str) -> None:
        barrier.wait()
        mine: list[int] = []
        while True:
            rows = _claim(db, owner, moment, limit=7)
            if not rows:
                break
            mine.extend(r.pk for r in rows)
        results[owner] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [pk for pks in results.values() for pk in pks]
    assert len(every) == len(set(every)) == 200
    count = run(
        db.query(
            lambda conn: conn.execute(
                select(func.count()).where(OUTBOX.c.lease_owner.is_not(None))
            ).scalar_one()
        )
    )
    assert count == 200
