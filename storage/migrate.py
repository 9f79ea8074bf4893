"""Apply and inspect the Alembic migration chain without an alembic.ini on disk.

The chain lives inside the package so that an installed gateway can migrate itself
(`cloudlink-gateway migrate`, and every `serve`). Several processes may start at once on
one PostgreSQL (replicas, or `migrate` beside `serve`): each takes one advisory lock
first, so exactly one migrates and the others wait for it, then find the schema at head
and do nothing. Without the lock, two processes created the same tables and one died
with a unique violation. On SQLite the migration runs inside ``BEGIN IMMEDIATE`` (see
env.py), which serializes migrators the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The advisory lock key of migrations: any constant of 64 bits, the same in every version.
MIGRATION_LOCK_KEY = 0x636C6F75644C6B4D

log = structlog.get_logger("storage.migrate")


def _packaged_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the packaged chain, bound to ``engine``."""
    config = _packaged_config()
    config.attributes["engine"] = engine
    return config


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the migration lock of the database (PostgreSQL; a no-op on SQLite).

    A session-level advisory lock, on a connection of its own that stays open while the
    migration runs on another: it outlives the migration's transaction, and it is given
    back even when the migration fails (or with the connection, if the process dies).
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        key = {"key": MIGRATION_LOCK_KEY}
        got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar()
        if not got:
            log.warning("migration_waiting", reason="another process is migrating the database")
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            connection.commit()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; one process at a time)."""
    with migration_lock(engine):
        command.upgrade(alembic_config(engine), "head")


@functools.cache
def packaged_head() -> str | None:
    """The newest revision of the packaged chain (read from disk once per process)."""
    return ScriptDirectory.from_config(_packaged_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_is_current(connection: Connection) -> bool:
    """The same check on an open connection, with one small query (for /readyz)."""
    try:
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return list(found) == [packaged_head()]
    except SQLAlchemyError:
        return False
