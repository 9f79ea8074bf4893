"""Database.read: a read written once as a plan of statements, run on a reading thread on
SQLite and on the event loop on PostgreSQL; its rows read as SQLAlchemy's do."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, select

from storage.engine import Database
from storage.errors import DatabaseBusy
from storage.prepared import Prepared
from storage.reads import Guarded, Plan, Read, run_plan
from storage.tables import ACCOUNTS, INTEGRATIONS, utcnow
from storage.transaction import Transaction
from tests.support.databases import close_every_connection

_INTEGRATION = Prepared(select(INTEGRATIONS).where(INTEGRATIONS.c.id == bindparam("id")))
_SLEEP = Prepared(select(func.pg_sleep(bindparam("seconds"))))
_NAMES = Prepared(select(ACCOUNTS.c.name).order_by(ACCOUNTS.c.name))


def integration(integration_id: str) -> Plan[Any]:
    rows = yield Read(_INTEGRATION, {"id": integration_id})
    return rows[0]


def names() -> Plan[list[str]]:
    return [row.name for row in (yield Read(_NAMES, {}))]


def sleep(seconds: float) -> Plan[None]:
    yield Read(_SLEEP, {"seconds": seconds})


def _add_account(db: Database, name: str) -> str:
    account_id = str(uuid.uuid4())

    def unit(tx: Transaction) -> None:
        tx.conn.execute(
            insert(ACCOUNTS).values(
                id=account_id, name=name, created_at=utcnow(), updated_at=utcnow()
            )
        )

    asyncio.run(db.transact(unit))
    return account_id


def test_a_plan_reads_json_and_times_as_sqlalchemy_does(db: Database) -> None:
    """JSON comes back as objects and times as datetimes, on either backend, the same
    as through SQLAlchemy's own execution."""
    account_id = _add_account(db, "acme")
    integration_id = str(uuid.uuid4())
    config = {"tenant": "contoso", "keys": [1, 2.5, None, "é"], "nested": {"on": True}}

    def unit(tx: Transaction) -> None:
        tx.conn.execute(
            insert(INTEGRATIONS).values(
                id=integration_id,
                account_id=account_id,
                kind="teams",
                config=config,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )

    asyncio.run(db.transact(unit))
    row = asyncio.run(db.read(integration, integration_id))
    with db.engine.connect() as conn:
        query = select(INTEGRATIONS).where(INTEGRATIONS.c.id == integration_id)
        expected = conn.execute(query).one()
        assert run_plan(conn, integration(integration_id)) == tuple(expected)
    assert tuple(row) == tuple(expected)
    assert row.config == config
    assert isinstance(row.created_at, datetime)


def test_a_read_after_the_server_closed_its_connections_runs_on_a_new_one(
    postgres_db: Database,
) -> None:
    """Every connection is ended (a server restart) between two reads on one event loop:
    the second read is answered, on a new connection."""
    _add_account(postgres_db, "before")

    async def scenario() -> tuple[list[str], list[str]]:
        first = await postgres_db.read(names)
        assert await asyncio.to_thread(close_every_connection, postgres_db) >= 1
        return first, await postgres_db.read(names)

    assert asyncio.run(scenario()) == (["before"], ["before"])


def test_reads_wait_for_a_free_connection_then_are_busy(database_url: str) -> None:
    """With every connection of the pool busy, a read waits the lock timeout for one,
    then fails with DatabaseBusy (answered 503 with Retry-After), and the pool serves
    again once the connection is free."""
    if not database_url.startswith("postgresql"):
        pytest.skip("reads on the event loop are PostgreSQL's")
    from storage.engine import make_engine

    database = Database(make_engine(database_url), threads=1, lock_timeout=0.3)
    try:

        async def scenario() -> list[str]:
            held = asyncio.ensure_future(database.read(sleep, 1.5))
            await asyncio.sleep(0.2)
            with pytest.raises(DatabaseBusy):
                await database.read(names)
            await held
            return await database.read(names)

        assert asyncio.run(scenario()) == []
    finally:
        database.dispose()


def test_a_cancelled_read_leaves_no_busy_connection_to_the_next(postgres_db: Database) -> None:
    """A read whose caller went away mid-statement: its connection is not given to the
    next read, which is answered at once with its own rows."""
    _add_account(postgres_db, "kept")

    async def scenario() -> list[str]:
        sleeping = asyncio.ensure_future(postgres_db.read(sleep, 30))
        await asyncio.sleep(0.2)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        return await asyncio.wait_for(postgres_db.read(names), 5)

    assert asyncio.run(scenario()) == ["kept"]


def test_each_event_loop_reads_on_connections_of_its_own(postgres_db: Database) -> None:
    """The CLI runs each command on a new event loop: reads keep working across loops."""
    _add_account(postgres_db, "one")
    assert asyncio.run(postgres_db.read(names)) == ["one"]
    assert asyncio.run(postgres_db.read(names)) == ["one"]


_ACCOUNT = Prepared(
    select(ACCOUNTS.c.id, ACCOUNTS.c.created_at).where(ACCOUNTS.c.name == bindparam("name"))
)
_NAMES_FROM = Prepared(
    select(ACCOUNTS.c.name, ACCOUNTS.c.created_at)
    .where(ACCOUNTS.c.name >= bindparam("from_name"))
    .order_by(ACCOUNTS.c.name.desc())
)


def guarded(guard_name: str, from_name: str) -> Plan[tuple[Any, list[Any]]]:
    row, rows = yield Guarded(
        Read(_ACCOUNT, {"name": guard_name}), Read(_NAMES_FROM, {"from_name": from_name})
    )
    return row, rows


def test_a_guarded_read_gives_the_guards_row_and_then_the_rows_in_their_order(
    db: Database,
) -> None:
    """The guard's row and the next read's rows, named and read as SQLAlchemy reads them,
    in that read's order; none of them without the guard's row; the guard's row alone
    when the next read finds nothing (one statement on PostgreSQL, two on SQLite)."""
    for name in ("delta", "alpha", "echo", "charlie", "bravo"):
        _add_account(db, name)
    row, rows = asyncio.run(db.read(guarded, "alpha", "bravo"))
    assert isinstance(row.created_at, datetime)
    assert [r.name for r in rows] == ["echo", "delta", "charlie", "bravo"]
    assert all(isinstance(r.created_at, datetime) for r in rows)
    assert asyncio.run(db.read(guarded, "nobody", "bravo")) == (None, [])
    row, rows = asyncio.run(db.read(guarded, "alpha", "zulu"))
    assert row is not None
    assert rows == []


def test_a_guarded_read_whose_parameters_clash_runs_as_two(db: Database) -> None:
    """A parameter of both statements with two values: each statement keeps its own."""
    for name in ("alpha", "bravo", "charlie"):
        _add_account(db, name)
    clash = Prepared(
        select(ACCOUNTS.c.name)
        .where(ACCOUNTS.c.name >= bindparam("name"))
        .order_by(ACCOUNTS.c.name)
    )

    def plan() -> Plan[tuple[Any, list[Any]]]:
        row, rows = yield Guarded(Read(_ACCOUNT, {"name": "alpha"}), Read(clash, {"name": "bravo"}))
        return row, rows

    row, rows = asyncio.run(db.read(plan))
    assert row is not None
    assert [r.name for r in rows] == ["bravo", "charlie"]
