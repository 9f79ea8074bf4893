"""Apply and inspect the Alembic migration chain without an alembic.ini on disk.

The chain lives inside the package so that an installed gateway can migrate itself
(`cloudlink-gateway migrate`, and every `serve`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _packaged_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the packaged chain, bound to ``engine``."""
    config = _packaged_config()
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
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
