"""Database.transact: each unit commits or fails alone; on SQLite, units that arrive
together share one commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert, select

from storage.engine import Database, make_engine
from storage.migrate import upgrade
from storage.tables import Account, utcnow
from tests.support.databases import sqlite_url

accounts = Account.__table__  # type: ignore[attr-defined]


def add(name: str, *, fail: bool = False) -> Any:
    def unit(conn: Connection) -> str:
        account_id = str(uuid.uuid4())
        conn.execute(
            insert(accounts).values(
                id=account_id, name=name, created_at=utcnow(), updated_at=utcnow()
            )
        )
        if fail:
            raise ValueError(f"{name} refused")
        return account_id

    return unit


def names(db: Database) -> list[str]:
    with db.read() as conn:
        return sorted(conn.execute(select(accounts.c.name)).scalars())


def test_units_arriving_together_commit_or_fail_each_on_its_own(db: Database) -> None:
    """The failing unit is rolled back alone and raises; the others are stored."""
    commits: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))

    async def main() -> list[Any]:
        return await asyncio.gather(
            db.transact(add("a")),
            db.transact(add("b", fail=True)),
            db.transact(add("c")),
            return_exceptions=True,
        )

    first, second, third = asyncio.run(main())
    assert isinstance(first, str)
    assert isinstance(third, str)
    assert isinstance(second, ValueError)
    assert names(db) == ["a", "c"]
    # SQLite: one shared commit; PostgreSQL: one per unit that succeeded.
    assert len(commits) == (1 if db.is_sqlite else 2)


def test_a_unit_alone_is_committed_before_its_caller_resumes(db: Database) -> None:
    """transact returns only after the commit: a fresh read sees the row."""

    async def main() -> str:
        return await db.transact(add("solo"))

    asyncio.run(main())
    assert names(db) == ["solo"]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """Group commit exists on SQLite only (PostgreSQL commits each unit alone)."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade(engine)
    database = Database(engine)
    yield database
    database.dispose()


def test_a_failed_commit_fails_every_unit_of_the_batch(sqlite_db: Database) -> None:
    """If the shared commit fails, no unit of the batch is acknowledged."""
    db = sqlite_db

    def refuse(_conn: Any) -> None:
        raise RuntimeError("disk full")

    event.listen(db.engine, "commit", refuse)

    async def main() -> list[Any]:
        return await asyncio.gather(
            db.transact(add("x")), db.transact(add("y")), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    event.remove(db.engine, "commit", refuse)
    assert names(db) == []
