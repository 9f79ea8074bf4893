"""Engines and the one way the rest of the gateway touches the database.

SQLite is the embedded default: one file in WAL mode, so readers never wait for the
writer and the CLI can work on the file while the server runs. PostgreSQL is used when
the database URL says so.

``Database.run`` is how request handlers reach the database. On SQLite a statement on
an indexed key takes tens of microseconds, less than a hop to a worker thread, so the
work runs on the event loop itself; that also serialises this process's writers, so
they never spin in SQLite's busy handler. PostgreSQL work waits on the network, so it
runs in worker threads, at most one per pooled connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine for ``url``, with SQLite tuned for a single-file server store."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"isolation_level": None, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    """Apply pragmas per connection and take over transaction start from the driver.

    The driver's own transaction handling starts transactions lazily and late; taking
    it over lets writers start with ``BEGIN IMMEDIATE`` so that two processes never
    both hold a read lock they want to upgrade (which SQLite answers with an
    immediate "database is locked" instead of waiting). Readers open no transaction.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin")
        if mode is not None:
            connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """The engine plus the policy for running blocking database work from async code.

    On SQLite, where all of a process's work runs on its event loop thread, each thread
    keeps one connection for reads and one for writes: checking a connection out of the
    pool and back costs more than the lookup it serves.
    """

    def __init__(self, engine: Engine, *, threads: int = 5) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._limiter = anyio.CapacityLimiter(threads)
        self._local = threading.local()
        self._kept: list[Connection] = []

    def _kept_connection(self, role: str) -> Connection:
        connection: Connection | None = getattr(self._local, role, None)
        if connection is None or connection.closed:
            connection = self.engine.connect()
            if role == "writer":
                connection = connection.execution_options(sqlite_begin="IMMEDIATE")
            setattr(self._local, role, connection)
            self._kept.append(connection)
        return connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading.

        On SQLite no transaction is opened: each statement reads a consistent snapshot
        on its own, and skipping BEGIN/ROLLBACK halves the cost of a lookup.
        """
        if not self.is_sqlite:
            with self.engine.connect() as connection:
                yield connection
            return
        connection = self._kept_connection("reader")
        try:
            yield connection
        finally:
            # Ends SQLAlchemy's notion of a transaction; no SQL was begun on SQLite.
            connection.rollback()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block ends without error."""
        if not self.is_sqlite:
            with self.engine.connect() as connection, connection.begin():
                yield connection
            return
        connection = self._kept_connection("writer")
        with connection.begin():
            yield connection

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work ``fn(*args)`` without stalling other requests."""
        if self.is_sqlite:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def dispose(self) -> None:
        """Close the kept connections and every pooled one."""
        for connection in self._kept:
            connection.close()
        self._kept.clear()
        self.engine.dispose()
