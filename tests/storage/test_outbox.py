"""The outbox table: rows written with their change, claimed under a lease, fenced by owner."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

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
                category="Test",
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


def test_a_claim_taken_over_or_given_back_has_an_unknown_outcome(db: Database) -> None:
    """A fresh claim knows nothing was sent; one taken over after its lease ran out, or
    given back at shutdown, says an earlier attempt may have been."""
    account_id = _account(db, {})
    _enqueue(db, account_id, 2)
    start = outbox.now()
    first = _claim(db, "worker-a", start)
    assert [row.outcome_unknown for row in first] == [False, False]
    taken = _claim(db, "worker-b", start + 31)
    assert [row.outcome_unknown for row in taken] == [True, True]
    _enqueue(db, account_id, 1)
    [fresh] = _claim(db, "worker-c", start + 32)
    assert fresh.outcome_unknown is False
    run(db.transact(lambda tx: outbox.release(tx.conn, owner="worker-c", pks=[fresh.pk])))
    [again] = _claim(db, "worker-d", start + 33)
    assert (again.pk, again.outcome_unknown) == (fresh.pk, True)


def test_an_unanswered_attempt_leaves_a_doubt_a_refused_one_does_not(db: Database) -> None:
    """A retry after a call that went unanswered is marked; after a plain refusal it is
    not; and a doubt, once there, stays through later refusals."""
    account_id = _account(db, {})
    _enqueue(db, account_id, 2)
    moment = outbox.now()
    refused, unanswered = _claim(db, "w", moment)

    def retry(pk: int, *, lost: bool) -> Callable[[Transaction], bool]:
        return lambda tx: outbox.retry_later(
            tx.conn, pk=pk, owner="w", at=moment, error="e", unanswered=lost
        )

    assert run(db.transact(retry(refused.pk, lost=False)))
    assert run(db.transact(retry(unanswered.pk, lost=True)))
    claimed = {row.pk: row.outcome_unknown for row in _claim(db, "w", moment + 1)}
    assert claimed == {refused.pk: False, unanswered.pk: True}
    assert run(db.transact(retry(unanswered.pk, lost=False)))
    [row] = [r for r in _claim(db, "w", moment + 2) if r.pk == unanswered.pk]
    assert row.outcome_unknown is True


def test_a_serial_kind_runs_one_row_per_target_at_a_time(db: Database) -> None:
    """Two due rows of one serial target: one is claimed, the other given back unattempted
    and left alone while the first is held (has_due says so too); it is claimed once the
    first is done. Other targets, and kinds not serial, are claimed together as before."""
    account_id = _account(db, {})

    def work(tx: Transaction) -> None:
        for kind, target in [
            ("job", "a"),
            ("job", "a"),
            ("job", "b"),
            ("send", "a"),
            ("send", "a"),
        ]:
            tx.enqueue(account_id=account_id, kind=kind, target_id=target, payload={})

    run(db.transact(work))
    moment = outbox.now()

    def claim(owner: str, at: float) -> list[outbox.Claimed]:
        return run(
            db.transact(
                lambda tx: outbox.claim(
                    tx.conn, owner=owner, moment=at, lease=30, limit=10, serial=("job",)
                )
            )
        )

    first = claim("w1", moment)
    assert sorted((row.kind, row.target_id) for row in first) == [
        ("job", "a"),
        ("job", "b"),
        ("send", "a"),
        ("send", "a"),
    ]
    assert claim("w2", moment + 1) == []
    assert run(db.query(outbox.has_due, moment + 1, ("job",))) is False
    assert run(db.query(outbox.has_due, moment + 1)) is True
    [held] = [row for row in first if (row.kind, row.target_id) == ("job", "a")]
    assert run(db.transact(lambda tx: outbox.complete(tx.conn, pk=held.pk, owner="w1")))
    [second] = claim("w2", moment + 2)
    assert (second.kind, second.target_id, second.attempts) == ("job", "a", 1)
    assert second.pk != held.pk


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


def test_revive_queues_the_named_dead_letters_of_one_account_again(db: Database) -> None:
    """Revived letters are pending again, due now with no attempts spent, and come back
    with who asked; letters not named, other accounts' and live rows are left alone."""
    account_id, other_id = _account(db, {}), _account(db, {})
    moment = 1_700_000_000.0

    def letter(owner: str, target_id: str, status: str = outbox.DEAD) -> dict[str, object]:
        return {
            "account_id": owner,
            "kind": "test",
            "target_id": target_id,
            "payload": {"n": target_id},
            "status": status,
            "attempts": 3,
            "available_at": moment,
            "last_error": "HTTP 503",
            "created_at": moment,
            "updated_at": moment,
        }

    rows = [
        letter(account_id, "a"),
        letter(account_id, "b"),
        letter(account_id, "c"),
        letter(other_id, "d"),
        letter(account_id, "e", outbox.PENDING),
    ]
    pks = run(
        db.transact(
            lambda tx: [
                tx.conn.execute(insert(OUTBOX).values(row).returning(OUTBOX.c.pk)).scalar_one()
                for row in rows
            ]
        )
    )
    before = outbox.now()
    named = [pks[2], pks[0], pks[3], pks[4]]
    revived = run(
        db.transact(
            lambda tx: outbox.revive(
                tx.conn, account_id=account_id, pks=named, actor_name="Operator", actor_id="cli"
            )
        )
    )
    assert revived == [
        outbox.Revived(pks[0], account_id, "test", "a", {"n": "a"}, "Operator", "cli"),
        outbox.Revived(pks[2], account_id, "test", "c", {"n": "c"}, "Operator", "cli"),
    ]
    found = {
        row.target_id: row for row in run(db.query(lambda conn: conn.execute(select(OUTBOX)).all()))
    }
    for target_id in ("a", "c"):
        assert (found[target_id].status, found[target_id].attempts) == (outbox.PENDING, 0)
        assert found[target_id].available_at >= before
    assert [found[t].status for t in ("b", "d")] == [outbox.DEAD, outbox.DEAD]
    assert (found["e"].attempts, found["e"].available_at) == (3, moment)
    claimed = {r.pk for r in _claim(db, "w", outbox.now())}
    assert {pks[0], pks[2]} <= claimed


def test_revive_without_names_queues_every_dead_letter_of_the_account(db: Database) -> None:
    """With no pks, every dead letter of the account is revived, and only those."""
    account_id, other_id = _account(db, {}), _account(db, {})
    _enqueue(db, account_id, 2)
    _enqueue(db, other_id, 1)
    claimed = _claim(db, "w", outbox.now())

    def bury(tx: Transaction) -> None:
        for row in claimed:
            outbox.bury(tx.conn, pk=row.pk, owner="w", error="HTTP 500")

    run(db.transact(bury))
    revived = run(
        db.transact(
            lambda tx: outbox.revive(
                tx.conn, account_id=account_id, pks=None, actor_name="Operator", actor_id=None
            )
        )
    )
    assert sorted(row.target_id for row in revived) == ["0", "1"]
    assert {row.account_id for row in revived} == {account_id}
    dead = run(
        db.query(
            lambda conn: conn.execute(
                select(OUTBOX.c.account_id).where(OUTBOX.c.status == outbox.DEAD)
            ).all()
        )
    )
    assert [row.account_id for row in dead] == [other_id]
