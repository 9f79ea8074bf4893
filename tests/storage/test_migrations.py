"""The one migration chain runs up and down on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from storage.engine import Database
from storage.migrate import alembic_config, current_revision, packaged_head, upgrade

TABLES = {
    "accounts",
    "integrations",
    "scim_credentials",
    "scim_users",
    "scim_user_values",
    "scim_claims",
    "events",
}


def test_chain_upgrades_downgrades_and_upgrades_again(db: Database) -> None:
    """head -> base -> head leaves the full schema; upgrade is idempotent."""
    assert current_revision(db.engine) == packaged_head()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    command.downgrade(alembic_config(db.engine), "base")
    assert current_revision(db.engine) is None
    assert not TABLES & set(inspect(db.engine).get_table_names())
    upgrade(db.engine)
    upgrade(db.engine)
    assert current_revision(db.engine) == packaged_head()


def test_models_and_migrations_agree(db: Database) -> None:
    """Autogenerate finds nothing to add: the tables the code declares are the migrated ones."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, SQLModel.metadata) == []
