"""Real databases for tests: a SQLite file per test, and a fresh PostgreSQL database per test.

PostgreSQL is found through the libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD)
that ``pg_virtualenv`` exports, or GATEWAY_TEST_POSTGRES_URL. Each test gets its own
database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

from storage.engine import Database, make_engine
from storage.migrate import upgrade

# One template per test session, so that sessions sharing a server never drop each other's.
TEMPLATE = "gw_template_" + uuid.uuid4().hex[:8]


def postgres_admin_url() -> str | None:
    """URL of a PostgreSQL server to create test databases on, if one is configured."""
    explicit = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if explicit:
        return explicit
    if not os.environ.get("PGHOST") or not os.environ.get("PGPORT"):
        return None
    user = quote(os.environ.get("PGUSER", "postgres"))
    password = os.environ.get("PGPASSWORD")
    auth = f"{user}:{quote(password)}" if password else user
    host = os.environ["PGHOST"]
    return f"postgresql+psycopg://{auth}@{host}:{os.environ['PGPORT']}/postgres"


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


class PostgresFactory:
    """Creates one migrated database per test from a template made once per session."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
        engine = make_engine(_with_database(admin_url, TEMPLATE), pool_size=1)
        upgrade(engine)
        engine.dispose()

    @contextmanager
    def database(self, *, migrated: bool = True) -> Iterator[str]:
        """A database of its own: migrated (a copy of the template) or empty."""
        name = "gw_" + uuid.uuid4().hex[:12]
        template = f' TEMPLATE "{TEMPLATE}"' if migrated else ""
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{template}'))
        try:
            yield _with_database(self.admin_url, name)
        finally:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
        self._admin.dispose()


@contextmanager
def backend_database(
    backend: str,
    directory: Path,
    postgres: Callable[[], PostgresFactory | None],
    *,
    migrated: bool = True,
) -> Iterator[str]:
    """A database of its own on ``backend``: a SQLite file in ``directory`` (migrated when
    first opened), or a PostgreSQL database, migrated or empty. ``postgres`` is asked for
    the server only then, so a SQLite test never touches PostgreSQL."""
    if backend == "sqlite":
        yield sqlite_url(directory)
        return
    server = postgres()
    assert server is not None
    with server.database(migrated=migrated) as url:
        yield url


def sqlite_url(directory: Path) -> str:
    """A SQLite file URL inside ``directory``."""
    return f"sqlite:///{directory / 'gateway.db'}"


def close_every_connection(db: Database) -> int:
    """What a server restart does to the gateway's connections: ends them all."""
    engine = make_engine(db.engine.url.render_as_string(hide_password=False), pool_size=1)
    try:
        with engine.connect() as conn:
            closed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return int(closed)
