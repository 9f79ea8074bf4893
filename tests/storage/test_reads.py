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
from storage.reads import Plan, Read, run_plan
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
