"""Token buckets in the database (PostgreSQL), taken from in batches by every replica."""

from __future__ import annotations

import time

import pytest

from storage import budgets
from storage.engine import Database
from tests.support.sync import run


@pytest.fixture
def pg(db: Database) -> Database:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("shared buckets are kept on PostgreSQL; SQLite has one machine")
    return db


def _take(db: Database, want: int, rate: float = 10.0, burst: float = 5.0) -> budgets.Taken:
    return run(
        db.transact(
            lambda tx: budgets.take(tx.conn, key="scim:a", rate=rate, burst=burst, want=want)
        )
    )


def test_a_new_bucket_is_full_and_gives_whole_tokens_up_to_what_it_holds(pg: Database) -> None:
    assert _take(pg, 3).tokens == 3
    assert _take(pg, 3).tokens == 2
    refused = _take(pg, 3)
    assert refused.tokens == 0
    assert 0 < refused.wait <= 0.1 + 0.01


def test_the_bucket_refills_at_its_rate_by_the_databases_clock(pg: Database) -> None:
    assert _take(pg, 5).tokens == 5
    time.sleep(0.35)
    again = _take(pg, 10)
    assert again.tokens in (3, 4)


def test_buckets_of_other_keys_are_apart(pg: Database) -> None:
    assert _take(pg, 5).tokens == 5
    other = run(
        pg.transact(lambda tx: budgets.take(tx.conn, key="scim:b", rate=10.0, burst=5.0, want=5))
    )
    assert other.tokens == 5
