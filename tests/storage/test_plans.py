"""Plans: database work written once as statements, run on a reading thread or in the
writer's group commit on SQLite, and on the event loop on PostgreSQL (Database.read,
Database.transact_plan); rows read as SQLAlchemy's do, and every guarantee of transact
holds: all or nothing with the event, once, busy after the lock timeout."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.engine import Database
from storage.errors import DatabaseBusy
from storage.plans import Plan, Run, RunMany, run_plan
from storage.prepared import Prepared
from storage.tables import ACCOUNTS, EVENTS, INTEGRATIONS, utcnow
from storage.transaction import NewEvent, Steps, Transaction
from tests.support.databases import close_every_connection

_INTEGRATION = Prepared(select(INTEGRATIONS).where(INTEGRATIONS.c.id == bindparam("id")))
_SLEEP = Prepared(select(func.pg_sleep(bindparam("seconds"))))
_NAMES = Prepared(select(ACCOUNTS.c.name).order_by(ACCOUNTS.c.name))


def integration(integration_id: str) -> Plan[Any]:
    rows = yield Run(_INTEGRATION, {"id": integration_id})
    return rows[0]


def names() -> Plan[list[str]]:
    return [row.name for row in (yield Run(_NAMES, {}))]


def sleep(seconds: float) -> Plan[None]:
    yield Run(_SLEEP, {"seconds": seconds})


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


_INSERT_ACCOUNT = Prepared(insert(ACCOUNTS))
_RENAME = Prepared(
    update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("b_id")).values(name=bindparam("b_name"))
)


def _account_row(name: str) -> dict[str, Any]:
    now = utcnow()
    return {"id": str(uuid.uuid4()), "name": name, "created_at": now, "updated_at": now}


def _event(account_id: str) -> NewEvent:
    return NewEvent(
        id=str(uuid.uuid4()),
        account_id=account_id,
        actor_name="Operator",
        actor_id="cli",
        action="Create",
        category="Admin",
        asset="Account",
        asset_id=account_id,
        type="account.created",
        properties_changed=[],
        details={},
    )


def add_with_event(name: str, *, fail: bool = False) -> Any:
    def work(steps: Steps) -> Plan[str]:
        row = _account_row(name)
        yield Run(_INSERT_ACCOUNT, row)
        yield from steps.event_steps(_event(row["id"]))
        if fail:
            raise ValueError(f"{name} refused")
        return str(row["id"])

    return work


def _stored(db: Database) -> tuple[list[str], int]:
    with db.engine.connect() as conn:
        names = sorted(conn.execute(select(ACCOUNTS.c.name)).scalars())
        events = conn.execute(select(func.count()).select_from(EVENTS)).scalar_one()
    return names, int(events)


def test_a_plan_unit_commits_with_its_event_or_leaves_nothing(db: Database) -> None:
    """A plan unit that raises leaves neither its row nor its event; one that returns
    has both, committed before its caller hears back."""
    with pytest.raises(ValueError, match="refused"):
        asyncio.run(db.transact_plan(add_with_event("refused", fail=True)))
    assert _stored(db) == ([], 0)
    account_id = asyncio.run(db.transact_plan(add_with_event("kept")))
    assert _stored(db) == (["kept"], 1)
    assert asyncio.run(db.read(names)) == ["kept"]
    assert uuid.UUID(account_id)


def test_a_plan_unit_refused_by_a_unique_index_raises_integrity_error(db: Database) -> None:
    """A duplicate key is SQLAlchemy's IntegrityError on both backends (the SCIM create
    turns it into a 409 naming the attribute), and nothing of the unit stays."""
    first = _account_row("first")

    def again(steps: Steps) -> Plan[None]:
        yield RunMany(_INSERT_ACCOUNT, [_account_row("second"), {**first, "name": "dup"}])
        yield from steps.event_steps(_event(first["id"]))

    def once(steps: Steps) -> Plan[None]:
        yield Run(_INSERT_ACCOUNT, first)

    asyncio.run(db.transact_plan(once))
    with pytest.raises(IntegrityError):
        asyncio.run(db.transact_plan(again))
    assert _stored(db) == (["first"], 0)


def test_a_plan_write_after_the_server_closed_its_connections_is_stored_once(
    postgres_db: Database,
) -> None:
    """Every connection is ended (a restart) between two writes on one event loop: the
    second runs on a new connection and is stored once."""

    async def scenario() -> None:
        await postgres_db.transact_plan(add_with_event("before"))
        assert await asyncio.to_thread(close_every_connection, postgres_db) >= 1
        await postgres_db.transact_plan(add_with_event("after"))

    asyncio.run(scenario())
    assert _stored(postgres_db) == (["after", "before"], 2)


def test_a_plan_write_waiting_past_the_lock_timeout_is_busy(postgres_db: Database) -> None:
    """Another transaction holds the row: the plan waits the lock timeout, set on its
    connection, then is busy, having written nothing; the connection serves again."""
    account_id = asyncio.run(postgres_db.transact_plan(add_with_event("held")))

    def rename(steps: Steps) -> Plan[None]:
        yield Run(_RENAME, {"b_id": account_id, "b_name": "renamed"})

    with postgres_db.engine.connect() as holder, holder.begin():
        holder.execute(select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == account_id).with_for_update())
        with pytest.raises(DatabaseBusy):
            asyncio.run(postgres_db.transact_plan(rename))
    assert _stored(postgres_db) == (["held"], 1)
    asyncio.run(postgres_db.transact_plan(rename))
    assert _stored(postgres_db) == (["renamed"], 1)


def test_a_cancelled_plan_write_leaves_nothing_and_no_open_transaction(
    postgres_db: Database,
) -> None:
    """The caller goes away while the unit waits inside its transaction: nothing of it
    is committed, and its connection, still in the transaction, is never handed on."""

    def slow(steps: Steps) -> Plan[None]:
        yield Run(_INSERT_ACCOUNT, _account_row("abandoned"))
        yield Run(_SLEEP, {"seconds": 30})

    async def scenario() -> list[str]:
        unit = asyncio.ensure_future(postgres_db.transact_plan(slow))
        await asyncio.sleep(0.3)
        unit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await unit
        await asyncio.wait_for(postgres_db.transact_plan(add_with_event("next")), 5)
        return await postgres_db.read(names)

    assert asyncio.run(scenario()) == ["next"]
    assert _stored(postgres_db) == (["next"], 1)
