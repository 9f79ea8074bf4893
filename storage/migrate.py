"""Apply and inspect the Alembic migration chain without an alembic.ini on disk.

The chain lives inside the package so that an installed gateway can migrate itself
(`cloudlink-gateway migrate`, and every `serve`). Several processes may start at once on
one PostgreSQL (replicas, or `migrate` beside `serve`): each takes one advisory lock
first, so exactly one migrates and the others wait for it, then find the schema at head
and do nothing. Without the lock, two processes created the same tables and one died
with a unique violation. On SQLite the same lock is an exclusive ``flock`` on a file beside
the database: ``BEGIN IMMEDIATE`` alone did not serialize them, because Alembic ends the
transaction between reading the version and running the revisions, and two processes
both ran the same revision ("duplicate column name").

During a rolling upgrade, replicas of the old version go on serving while the new one
has migrated. The schema names the oldest code that can use it (``schema_compatibility``,
decision 0017): a process stays ready on a newer schema that still admits it, and refuses,
saying why, one it cannot use, older or newer.
"""

from __future__ import annotations

import fcntl
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
    """Hold the migration lock of the database.

    On PostgreSQL a session-level advisory lock, on a connection of its own that stays
    open while the migration runs on another: it outlives the migration's transaction,
    and it is given back even when the migration fails (or with the connection, if the
    process dies). On a SQLite file, an exclusive ``flock`` on ``<file>.migrate.lock``,
    which the kernel gives back with the process too.
    """
    if engine.dialect.name != "postgresql":
        with _file_lock(engine):
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


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield  # one process's own database: nobody to wait for
        return
    with open(f"{database}.migrate.lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("migration_waiting", reason="another process is migrating the database")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SchemaUnusable(RuntimeError):
    """The database's schema is one this code cannot use; the message says what to do."""


def upgrade(engine: Engine) -> SchemaState:
    """Bring the schema to this code's newest revision (idempotent; one process at a time).

    A schema newer than this code is left alone when it admits this code (an older
    replica restarting during a rolling upgrade) and refused otherwise.
    """
    with migration_lock(engine):
        state = read_schema_state(engine)
        if state.verdict == "too_new":
            raise SchemaUnusable(state.explained())
        if state.verdict != "compatible":
            command.upgrade(alembic_config(engine), "head")
            state = read_schema_state(engine)
        return state


def check_usable(engine: Engine) -> SchemaState:
    """The schema, refused with ``SchemaUnusable`` unless this code can serve on it."""
    state = read_schema_state(engine)
    if not state.usable:
        raise SchemaUnusable(state.explained())
    return state


@functools.cache
def packaged_head() -> str | None:
    """The newest revision of the packaged chain (read from disk once per process)."""
    return ScriptDirectory.from_config(_packaged_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision of the packaged chain: a database at any other is newer than this code."""
    script = ScriptDirectory.from_config(_packaged_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def require_code(revision: str) -> None:
    """In a migration: code whose newest migration is older than ``revision`` cannot use the
    schema this migration leaves (it removes or changes something that code reads)."""
    from alembic import op

    op.execute(text("DELETE FROM schema_compatibility"))
    op.get_bind().execute(
        text("INSERT INTO schema_compatibility (id, oldest_code) VALUES (1, :revision)"),
        {"revision": revision},
    )


Verdict = Literal["current", "compatible", "outdated", "empty", "too_new"]


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands for this code."""

    revision: str | None
    oldest_code: str | None
    verdict: Verdict

    @property
    def usable(self) -> bool:
        """This code can serve on it: its own head, or a newer schema that admits it."""
        return self.verdict in ("current", "compatible")

    def explained(self) -> str:
        """What is wrong and what to do, for an operator."""
        head = packaged_head()
        if self.verdict == "empty":
            return "the database has no schema yet: run `cloudlink-gateway migrate` first"
        if self.verdict == "outdated":
            return (
                f"the database schema is at revision {self.revision}, older than this "
                f"version's {head}: run `cloudlink-gateway migrate` (the chart's migration "
                "Job) first"
            )
        if self.verdict == "too_new":
            return (
                f"the database schema is at revision {self.revision}, made by a newer version "
                f"that needs code from revision {self.oldest_code or '(unknown)'} on; this "
                f"version is at {head}: run the newer version"
            )
        return f"the database schema is at revision {self.revision}, usable by this version"


def schema_state(connection: Connection) -> SchemaState:
    """The schema's revision and whether this code can use it, in one or two small reads."""
    try:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        connection.rollback()
        revision = None
    if revision is None:
        return SchemaState(None, None, "empty")
    if revision == packaged_head():
        return SchemaState(revision, None, "current")
    if revision in known_revisions():
        return SchemaState(revision, None, "outdated")
    try:
        oldest = connection.execute(text("SELECT oldest_code FROM schema_compatibility")).scalar()
    except SQLAlchemyError:
        connection.rollback()
        oldest = None
    admitted = oldest is not None and oldest in known_revisions()
    return SchemaState(revision, oldest, "compatible" if admitted else "too_new")


def read_schema_state(engine: Engine) -> SchemaState:
    """``schema_state`` on a connection of its own."""
    with engine.connect() as connection:
        return schema_state(connection)
