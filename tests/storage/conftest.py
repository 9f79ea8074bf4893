"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.engine import Database, make_engine
from storage.migrate import upgrade


@pytest.fixture
def postgres_db(database_url: str) -> Iterator[Database]:
    """A PostgreSQL database whose writes wait at most half a second for a lock."""
    if not database_url.startswith("postgresql"):
        pytest.skip("connections the server closes, and row locks, are PostgreSQL's")
    engine = make_engine(database_url)
    upgrade(engine)
    database = Database(engine, lock_timeout=0.5)
    yield database
    database.dispose()
