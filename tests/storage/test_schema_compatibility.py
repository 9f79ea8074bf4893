"""A rolling upgrade: replicas of the older code stay ready on a newer schema that admits
them, and every process refuses, saying why, a schema it cannot use (decision 0017).

The newer code is simulated the way its migration leaves the database: a revision this
code does not know in ``alembic_version``, and ``schema_compatibility`` naming the oldest
code that can use it.
"""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from storage.engine import Database
from storage.migrate import (
    SchemaUnusable,
    alembic_config,
    check_usable,
    known_revisions,
    packaged_head,
    read_schema_state,
    upgrade,
)

NEWER = "9999"


def newer_schema(db: Database, oldest_code: str) -> None:
    """The database as a newer version's migration leaves it."""
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})
        conn.execute(text("UPDATE schema_compatibility SET oldest_code = :v"), {"v": oldest_code})


def test_this_code_is_current_on_its_own_schema(db: Database) -> None:
    """Migrated: the head, admitted from the revision the first compatibility row names."""
    state = read_schema_state(db.engine)
    assert (state.verdict, state.revision) == ("current", packaged_head())
    with db.engine.connect() as conn:
        oldest = conn.execute(text("SELECT oldest_code FROM schema_compatibility")).scalar()
    assert oldest in known_revisions()


def test_a_newer_schema_that_admits_this_code_is_used_as_it_is(db: Database) -> None:
    """An older replica restarting after the new version migrated: ready, and its start's
    migration leaves the newer schema alone instead of failing on an unknown revision."""
    newer_schema(db, oldest_code=packaged_head() or "")
    assert check_usable(db.engine).verdict == "compatible"
    assert upgrade(db.engine).verdict == "compatible"
    assert read_schema_state(db.engine).revision == NEWER


def test_a_newer_schema_that_needs_newer_code_is_refused_with_what_to_do(db: Database) -> None:
    """A contract migration raised the floor past this code: refused, naming both revisions."""
    newer_schema(db, oldest_code=NEWER)
    for refuse in (check_usable, upgrade):
        with pytest.raises(SchemaUnusable) as refused:
            refuse(db.engine)
        assert NEWER in str(refused.value)
        assert "newer version" in str(refused.value)
    assert read_schema_state(db.engine).revision == NEWER


def test_an_older_schema_is_refused_without_migrating_and_migrated_with(db: Database) -> None:
    """A newer replica on a schema not yet migrated: ``check_usable`` says to migrate;
    ``upgrade`` migrates."""
    command.downgrade(alembic_config(db.engine), "0004")
    with pytest.raises(SchemaUnusable) as refused:
        check_usable(db.engine)
    assert "cloudlink-gateway migrate" in str(refused.value)
    assert upgrade(db.engine).verdict == "current"


def test_an_empty_database_is_refused_without_migrating(db: Database) -> None:
    command.downgrade(alembic_config(db.engine), "base")
    with pytest.raises(SchemaUnusable, match="no schema yet"):
        check_usable(db.engine)
