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

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000


def make_engine(url: str, *, pool_size: int = 5, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url``, with SQLite tuned for a single-file server store.

    ``sqlite_synchronous`` FULL makes every commit durable against power loss before it
    is acknowledged; NORMAL is faster and only durable against a crash of the process.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            hide_parameters=True,
            connect_args={"isolation_level": None, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    return create_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        # Statement errors would otherwise quote bound values (emails, token hashes) in logs.
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def _json_dumps(value: Any) -> str:
    """JSON columns are written with orjson (several times faster than the json module)."""
    return orjson.dumps(value).decode()


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
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
        cursor.execute(f"PRAGMA synchronous={synchronous}")
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
        self._group_commit = _GroupCommit(self)

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

    def data_version(self) -> int | None:
        """SQLite's ``data_version``: it changes whenever another connection commits.

        Lets a cache of rarely changing rows (credentials) be trusted until anything
        is committed, by this process or another. None on PostgreSQL (no such cache).
        """
        if not self.is_sqlite:
            return None
        raw = self._kept_connection("reader").connection.driver_connection
        assert raw is not None
        version: int = raw.execute("PRAGMA data_version").fetchone()[0]
        return version

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

    async def transact(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction; return its result once it is committed.

        On PostgreSQL each call is its own transaction, in a worker thread. On SQLite,
        calls that arrive together share one transaction and one commit (group commit):
        each runs inside its own savepoint, so one that fails is rolled back alone and
        gets its own exception, and every caller hears back only after the commit.
        """
        if not self.is_sqlite:
            return await anyio.to_thread.run_sync(self._transact_alone, work, limiter=self._limiter)
        return await self._group_commit.submit(work)

    def _transact_alone(self, work: Callable[[Connection], T]) -> T:
        with self.write() as connection:
            return work(connection)

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


class _GroupCommit:
    """Collects the write units that arrive while the event loop is busy; commits them once.

    A unit submitted while none is pending schedules a flush with ``call_soon``: requests
    already runnable get to submit theirs first, so under load a flush carries many
    units and one commit (one fsync); alone, a unit is flushed at once.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []

    async def submit(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((work, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if len(batch) == 1:
            self._flush_alone(*batch[0])
            return
        outcomes: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        try:
            with self._db.write() as connection:
                for work, future in batch:
                    savepoint = connection.begin_nested()
                    try:
                        result = work(connection)
                    except Exception as exc:  # the unit's own failure, reported to its caller
                        savepoint.rollback()
                        outcomes.append((future, exc, None))
                    else:
                        savepoint.commit()
                        outcomes.append((future, None, result))
        except Exception as exc:  # the commit itself failed: nothing of the batch is stored
            for _work, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, error, result in outcomes:
            _settle(future, error, result)

    def _flush_alone(self, work: Callable[[Connection], Any], future: asyncio.Future[Any]) -> None:
        """A unit alone needs no savepoint: its failure rolls back the whole transaction."""
        try:
            with self._db.write() as connection:
                result = work(connection)
        except Exception as exc:  # reported to the caller
            _settle(future, exc, None)
            return
        _settle(future, None, result)


def _settle(future: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if future.done():  # the caller went away (request cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
