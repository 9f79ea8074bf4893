"""Database.transact, the one write path: each unit commits or fails alone; on SQLite the
units that queue while the writer works share one commit, and a unit that cannot get the
write lock in time fails with DatabaseBusy, having written nothing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update

from storage.engine import Database, make_engine
from storage.errors import DatabaseBusy
from storage.migrate import upgrade
from storage.tables import ACCOUNTS, ENDPOINTS, EVENTS, OUTBOX, utcnow
from storage.transaction import NewEvent, Transaction
from tests.support.databases import close_every_connection, sqlite_url
from tests.support.locker import write_lock_held


def add(
    name: str,
    *,
    fail: bool = False,
    wait: threading.Event | None = None,
    started: threading.Event | None = None,
) -> Any:
    def unit(tx: Transaction) -> str:
        if started is not None:
            started.set()
        if wait is not None:
            assert wait.wait(10)
        account_id = str(uuid.uuid4())
        tx.conn.execute(
            insert(ACCOUNTS).values(
                id=account_id, name=name, created_at=utcnow(), updated_at=utcnow()
            )
        )
        if fail:
            raise ValueError(f"{name} refused")
        return account_id

    return unit


def names(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return sorted(conn.execute(select(ACCOUNTS.c.name)).scalars())


async def _queued_behind_a_busy_writer(db: Database, *units: Any) -> list[Any]:
    """Run ``units`` while the writer is busy with another, so they queue up together."""
    release, started = threading.Event(), threading.Event()
    first = asyncio.ensure_future(db.transact(add("first", wait=release, started=started)))
    assert await asyncio.to_thread(started.wait, 10)  # the writer is inside "first"
    rest = [asyncio.ensure_future(db.transact(unit)) for unit in units]
    await asyncio.sleep(0)
    release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_units_queued_together_commit_or_fail_each_on_its_own(db: Database) -> None:
    """The failing unit is rolled back alone and raises; the others are stored."""
    commits: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))
    _first, a, b, c = asyncio.run(
        _queued_behind_a_busy_writer(db, add("a"), add("b", fail=True), add("c"))
    )
    assert isinstance(a, str)
    assert isinstance(c, str)
    assert isinstance(b, ValueError)
    assert names(db) == ["a", "c", "first"]
    # SQLite: "first" alone, then a, b, c in one shared commit; PostgreSQL: one per success.
    assert len(commits) == (2 if db.is_sqlite else 3)


def test_a_unit_alone_is_committed_before_its_caller_resumes(db: Database) -> None:
    """transact returns only after the commit: a fresh read sees the row."""
    asyncio.run(db.transact(add("solo")))
    assert names(db) == ["solo"]


def test_reads_see_committed_rows(db: Database) -> None:
    """query runs on a reading connection off the event loop and sees what was committed."""
    asyncio.run(db.transact(add("seen")))

    def read(conn: Any) -> list[str]:
        return list(conn.execute(select(ACCOUNTS.c.name)).scalars())

    assert asyncio.run(db.query(read)) == ["seen"]


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """Group commit and the writer thread exist on SQLite only."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    database = Database(engine, lock_timeout=0.5)
    yield database
    database.dispose()


def test_a_failed_commit_fails_every_unit_of_the_batch(sqlite_db: Database) -> None:
    """If the shared commit fails, no unit of the batch is acknowledged."""
    db = sqlite_db

    def refuse(_conn: Any) -> None:
        raise RuntimeError("disk full")

    asyncio.run(db.transact(add("before")))
    event.listen(db.engine, "commit", refuse)
    results = asyncio.run(_queued_behind_a_busy_writer(db, add("x"), add("y")))
    event.remove(db.engine, "commit", refuse)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert names(db) == ["before"]


def test_a_write_that_cannot_get_the_lock_in_time_is_busy_and_writes_nothing(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Another process holds the write lock past lock_timeout: DatabaseBusy, nothing stored."""
    db = sqlite_db
    with write_lock_held(tmp_path / "gateway.db"):
        with pytest.raises(DatabaseBusy) as caught:
            asyncio.run(db.transact(add("blocked")))
        assert caught.value.retry_after >= 1
    assert names(db) == []
    asyncio.run(db.transact(add("after")))
    assert names(db) == ["after"]


def test_reads_are_served_while_another_process_holds_the_write_lock(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """WAL: a held write lock does not stop readers."""
    db = sqlite_db
    asyncio.run(db.transact(add("kept")))
    with write_lock_held(tmp_path / "gateway.db"):
        rows = asyncio.run(db.query(lambda conn: list(conn.execute(select(ACCOUNTS.c.name)))))
    assert [row.name for row in rows] == ["kept"]


def test_each_commit_reports_how_many_units_it_carried(tmp_path: Path) -> None:
    """on_commit hears 1 for a unit alone and the batch size for units queued together."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    sizes: list[int] = []
    db = Database(engine, on_commit=sizes.append)
    try:
        asyncio.run(_queued_behind_a_busy_writer(db, add("a"), add("b"), add("c")))
    finally:
        db.dispose()
    assert sizes == [1, 3]


def test_an_event_cannot_be_recorded_outside_a_transaction(db: Database) -> None:
    """A Transaction built by hand on a connection with no open transaction refuses to write."""
    event = NewEvent("e1", "a1", "Operator", None, "Create", "Admin", "Account", "a1", "t", [], {})
    with db.engine.connect() as conn, pytest.raises(RuntimeError, match=r"Database\.transact"):
        Transaction(conn).record_event(event)


def _event(event_id: str, account_id: str) -> NewEvent:
    return NewEvent(
        event_id, account_id, "Operator", None, "Edit", "Admin", "Presence", "x", "t", [], {}
    )


def test_batched_events_are_written_together_with_their_deliveries(db: Database) -> None:
    """Inside ``batched_events`` nothing is inserted until it ends; then every event is,
    in order, with one delivery per enabled endpoint of its account (none for an account
    without endpoints), and the unit reports outbox rows for the workers."""
    with_endpoint = asyncio.run(db.transact(add("with endpoint")))
    without = asyncio.run(db.transact(add("without")))

    def endpoint(tx: Transaction) -> None:
        tx.conn.execute(
            insert(ENDPOINTS).values(
                id=str(uuid.uuid4()), account_id=with_endpoint, url="https://e.example", secret="s"
            )
        )

    asyncio.run(db.transact(endpoint))

    def unit(tx: Transaction) -> tuple[int, bool]:
        with tx.batched_events():
            for n in range(3):
                tx.record_event(_event(f"e{n}", with_endpoint))
                tx.record_event(_event(f"w{n}", without))
            inside = len(tx.conn.execute(select(EVENTS.c.id)).all())
        return inside, tx.enqueued

    assert asyncio.run(db.transact(unit)) == (0, True)
    with db.engine.connect() as conn:
        events = conn.execute(select(EVENTS.c.id, EVENTS.c.account_id).order_by(EVENTS.c.seq))
        assert [row.id for row in events] == ["e0", "w0", "e1", "w1", "e2", "w2"]
        deliveries = conn.execute(
            select(OUTBOX.c.account_id, OUTBOX.c.payload).order_by(OUTBOX.c.pk)
        ).all()
    assert [(row.account_id, row.payload["event_id"]) for row in deliveries] == [
        (with_endpoint, "e0"),
        (with_endpoint, "e1"),
        (with_endpoint, "e2"),
    ]


def test_batched_events_of_a_failed_unit_leave_nothing(db: Database) -> None:
    """A unit that raises inside ``batched_events`` writes none of its events."""
    account = asyncio.run(db.transact(add("a")))

    def unit(tx: Transaction) -> None:
        with tx.batched_events():
            tx.record_event(_event("e0", account))
            raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        asyncio.run(db.transact(unit))
    with db.engine.connect() as conn:
        assert conn.execute(select(EVENTS.c.id)).all() == []


def test_connections_the_server_closed_are_replaced_and_nothing_is_written_twice(
    postgres_db: Database,
) -> None:
    """Every connection of the gateway is ended (a restart): the next read and the next
    write each run on a new connection, and the write is stored once."""
    db = postgres_db
    asyncio.run(db.transact(add("before")))
    assert asyncio.run(db.query(lambda conn: conn.execute(select(ACCOUNTS.c.name)).all()))
    assert close_every_connection(db) >= 1
    read = asyncio.run(db.query(lambda conn: conn.execute(select(ACCOUNTS.c.name)).scalars().all()))
    assert read == ["before"]
    assert close_every_connection(db) >= 1
    asyncio.run(db.transact(add("after")))
    assert names(db) == ["after", "before"]


def test_a_row_lock_held_past_the_lock_timeout_makes_the_write_busy(
    postgres_db: Database,
) -> None:
    """Another transaction holds an account's row: a write needing it waits the lock
    timeout, set on every connection, then is busy, having written nothing."""
    db = postgres_db
    account_id = asyncio.run(db.transact(add("held")))

    def rename(tx: Transaction) -> None:
        tx.conn.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == account_id).values(name="new"))

    with db.engine.connect() as holder, holder.begin():
        holder.execute(select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == account_id).with_for_update())
        with pytest.raises(DatabaseBusy):
            asyncio.run(db.transact(rename))
    assert names(db) == ["held"]
