"""Engines, and the one way the rest of the gateway reaches the database.

``Database.query(fn, ...)`` reads and ``Database.transact(work)`` writes; both run the
blocking work on threads, never on the event loop, so a database that waits (another
process holding SQLite's write lock, a slow PostgreSQL) delays the requests that need
it and nothing else: health checks and metrics keep answering (decision 0007).

SQLite is the embedded default: one file in WAL mode, so readers never wait for the
writer and the CLI can work on the file while the server runs. Reads run on a small
pool of threads, each with its own connection; writes go to one writer thread per
process, which commits the units that queue up while it works in one transaction and
one fsync (group commit). A write that cannot get the lock in time fails with
``DatabaseBusy`` before anything of it is written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from storage.errors import PG_RETRYABLE, DatabaseBusy, DatabaseUnavailable
from storage.loop_reader import LoopReader
from storage.prepared import Prepared
from storage.reads import Plan, Read, run_plan
from storage.sqlite_writer import SqliteWriter, is_lock_error
from storage.transaction import Transaction

T = TypeVar("T")

log = structlog.get_logger("storage.engine")

SQLITE_READ_BUSY_TIMEOUT_MS = 5000


def make_engine(url: str, *, pool_size: int = 5, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url``, with SQLite tuned for a single-file server store.

    ``sqlite_synchronous`` FULL makes every commit durable against power loss before it
    is acknowledged; NORMAL is faster and only durable against a crash of the process.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            owner_only(Path(parsed.database))
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
    # No pre-ping: it cost a round trip on every checkout. A connection found dead is
    # replaced, and its unit run again when nothing of it can have been committed
    # (``Database``); the pool is emptied on the first such error.
    return create_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        # Statement errors would otherwise quote bound values (emails, token hashes) in logs.
        hide_parameters=True,
        pool_size=pool_size,
        # Each thread keeps a reading connection, and takes one for a write besides.
        max_overflow=pool_size,
    )


def owner_only(database: Path) -> None:
    """Create the SQLite file (and its directory) readable by its owner alone.

    The file holds every account's users, messages and encrypted secrets. SQLite gives
    its ``-wal`` and ``-shm`` files the database's own permissions, so the database is
    created 0600 before SQLite opens it (an empty file is a new database), and one left
    readable by others (an earlier version made it 0644) is narrowed.
    """
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.exists() and path.stat().st_mode & 0o077:
            try:
                path.chmod(0o600)
            except OSError as exc:  # another user's file: say so, and go on
                log.warning("database_file_readable_by_others", path=str(path), error=str(exc))


def _json_dumps(value: Any) -> str:
    """JSON columns are written with orjson (several times faster than the json module)."""
    return orjson.dumps(value).decode()


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    """Apply pragmas per connection and take over transaction start from the driver.

    The driver's own transaction handling starts transactions lazily and late; taking
    it over lets the writer start with ``BEGIN IMMEDIATE`` so that two processes never
    both hold a read lock they want to upgrade (which SQLite answers with an
    immediate "database is locked" instead of waiting). Readers open no transaction.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_READ_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin")
        if mode is not None:
            connection.exec_driver_sql(f"BEGIN {mode}")


class _NotCommitted(Exception):
    """A write's connection was found dead before its commit: safe to run again."""

    def __init__(self, error: OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


class Database:
    """The engine plus the threads that run its blocking work for async code.

    ``lock_timeout`` bounds how long a write waits for the write lock (SQLite) or a row
    lock or pooled connection (PostgreSQL) before it fails with ``DatabaseBusy``.
    ``on_commit`` hears how many units each commit carried (for a metric).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        threads: int = 5,
        lock_timeout: float = 5.0,
        max_batch: int = 256,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self._on_commit = on_commit
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.lock_timeout = lock_timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="db"
        )
        self._local = threading.local()
        self._kept: list[Connection] = []
        self._kept_lock = threading.Lock()
        self._writer: SqliteWriter | None = None
        self._writer_lock = threading.Lock()
        self._max_batch = max_batch
        self._loop_reader: LoopReader | None = None
        if not self.is_sqlite:
            self._set_lock_timeout()
            # As many as the threads: with half as many, lookups queued for one (p99
            # 27-32 ms against 14-18 ms, PostgreSQL, 2 workers).
            self._loop_reader = LoopReader(
                engine,
                size=threads,
                wait=lock_timeout,
                retry_after=self.retry_after,
            )
        # Called on the event loop after a commit that wrote outbox rows (wakes the workers
        # of this process; other processes find the rows when they next look).
        self.outbox_listener: Callable[[], None] | None = None

    def _set_lock_timeout(self) -> None:
        """Every PostgreSQL connection waits at most ``lock_timeout`` for a lock, set once
        when it connects rather than by a statement in every transaction. Connections
        opened before (the migration's) are dropped so that none goes without it."""
        statement = f"SET lock_timeout = {max(1, int(self.lock_timeout * 1000))}"

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            try:
                dbapi_connection.execute(statement)
            finally:
                dbapi_connection.autocommit = autocommit

        self.engine.dispose()

    @property
    def retry_after(self) -> int:
        """Seconds a refused caller is told to wait before retrying."""
        return max(1, round(self.lock_timeout))

    # -- reads ---------------------------------------------------------------------------

    def _reader(self) -> Connection:
        """This thread's reading connection, opened on first use and kept.

        No transaction is opened on it: on SQLite each statement reads a consistent
        snapshot on its own; on PostgreSQL it runs in autocommit, where a statement sees
        what it would see in a READ COMMITTED transaction. Skipping BEGIN/ROLLBACK and
        the pool's checkout halves the round trips of a lookup.
        """
        kept: Connection | None = getattr(self._local, "reader", None)
        if kept is None or kept.closed or kept.invalidated:
            kept = self.engine.connect()
            if not self.is_sqlite:
                kept = kept.execution_options(isolation_level="AUTOCOMMIT")
            self._local.reader = kept
            with self._kept_lock:
                self._kept.append(kept)
        return kept

    def _drop_reader(self) -> None:
        kept: Connection | None = getattr(self._local, "reader", None)
        self._local.reader = None
        if kept is not None:
            with self._kept_lock:
                if kept in self._kept:
                    self._kept.remove(kept)
            kept.invalidate()
            kept.close()

    def _read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            try:
                return self._read_on(self._reader(), fn, args)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # The server closed it (a restart, an idle timeout): a read is safe to
                # run again, once, on a new connection.
                self._drop_reader()
                return self._read_on(self._reader(), fn, args)
        except PoolTimeout as exc:
            raise self._busy("No database connection was free") from exc
        except OperationalError as exc:
            raise self._translate(exc) from exc

    @staticmethod
    def _read_on(conn: Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(conn, *args)
        finally:
            # Ends SQLAlchemy's notion of a transaction; none was begun in SQL.
            if not conn.closed and not conn.invalidated:
                conn.rollback()

    async def query(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on a reading connection, off the event loop."""
        return await asyncio.wrap_future(self._executor.submit(self._read, fn, args))

    async def read(self, plan: Callable[..., Plan[T]], *args: Any, **kwargs: Any) -> T:
        """Run the read ``plan(*args, **kwargs)`` (``storage.reads``): on SQLite in one
        hop to a reading thread; on PostgreSQL on the event loop, with no thread at all."""
        if self._loop_reader is None:
            return await self.query(lambda conn: run_plan(conn, plan(*args, **kwargs)))
        return await self._loop_reader.read(plan(*args, **kwargs))

    # -- writes --------------------------------------------------------------------------

    @property
    def writes_in_one_statement(self) -> bool:
        """Whether ``write_statement`` is available (PostgreSQL; ``storage.one_statement``)."""
        return self._loop_reader is not None

    async def write_statement(self, statement: Prepared, params: Mapping[str, Any]) -> list[Any]:
        """Run one statement that writes as a transaction of its own (autocommit), on the
        event loop; its rows, once it is committed (``storage.one_statement``).

        A row whose ``enqueued`` column is above 0 wakes this process's outbox worker.
        Failures are those of ``transact``: ``DatabaseBusy`` past the lock timeout,
        ``DatabaseUnavailable``, SQLAlchemy's ``IntegrityError``. A connection the server
        had closed fails the statement, which then runs once more on a new connection:
        when the first attempt's answer was lost after its commit, the second one finds
        its rows there (a create gets its unique violation), which the caller must
        recognise as its own.
        """
        if self._loop_reader is None:
            raise RuntimeError("one-statement writes are PostgreSQL's; use transact")
        rows = await self._loop_reader.write(Read(statement, params))
        if self._on_commit is not None:
            self._on_commit(1)
        if self.outbox_listener is not None and any(getattr(row, "enqueued", 0) for row in rows):
            self.outbox_listener()
        return rows

    async def transact(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in a write transaction; return its result once it is committed.

        The only way anything is written. On SQLite the unit goes to the writer thread
        and shares a commit with the units that arrive meanwhile, each in its own
        savepoint, so one that fails is rolled back alone and gets its own exception.
        On PostgreSQL each unit is its own transaction on a pool thread. Either way the
        caller hears back only after the commit.
        """
        enqueued: list[bool] = []

        def unit(tx: Transaction) -> T:
            result = work(tx)
            enqueued.append(tx.enqueued)
            return result

        if self.is_sqlite:
            future = self._sqlite_writer().submit(unit)
        else:
            future = self._executor.submit(self._transact_postgres, unit)
        result: T = await asyncio.wrap_future(future)
        if enqueued and enqueued[-1] and self.outbox_listener is not None:
            self.outbox_listener()
        return result

    def _sqlite_writer(self) -> SqliteWriter:
        with self._writer_lock:
            if self._writer is None:
                self._writer = SqliteWriter(
                    self.engine,
                    lock_timeout=self.lock_timeout,
                    retry_after=self.retry_after,
                    max_batch=self._max_batch,
                    on_commit=self._on_commit,
                )
            return self._writer

    def _transact_postgres(self, work: Callable[[Transaction], T]) -> T:
        try:
            try:
                result = self._one_transaction(work)
            except _NotCommitted:
                # The connection was dead before anything was committed: once more, on a
                # new one (the pool was emptied).
                result = self._one_transaction(work)
        except _NotCommitted as stale:
            raise self._translate(stale.error) from stale.error
        except PoolTimeout as exc:
            raise self._busy("No database connection was free") from exc
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in PG_RETRYABLE:
                raise self._busy("The change waited too long for a lock") from exc
            if isinstance(exc, OperationalError):
                raise self._translate(exc) from exc
            raise
        if self._on_commit is not None:
            self._on_commit(1)
        return result

    def _one_transaction(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one transaction; ``_NotCommitted`` if the connection turned out
        dead before the commit was sent (then nothing of it was written)."""
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                result = work(Transaction(conn))
            except DBAPIError as exc:
                if transaction.is_active:
                    transaction.rollback()
                if exc.connection_invalidated and isinstance(exc, OperationalError):
                    raise _NotCommitted(exc) from exc
                raise
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise
            transaction.commit()
            return result

    def _busy(self, what: str) -> DatabaseBusy:
        return DatabaseBusy.waited(what, self.retry_after)

    def _translate(self, exc: OperationalError) -> DatabaseUnavailable:
        if is_lock_error(exc):
            return self._busy("The database is locked by another process")
        return DatabaseUnavailable.unreachable(self.retry_after)

    # -- life cycle ----------------------------------------------------------------------

    def dispose(self) -> None:
        """Stop the writer (after the units it holds), the threads, and every connection."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._executor.shutdown(wait=True)
        if self._loop_reader is not None:
            self._loop_reader.close()
        with self._kept_lock:
            for connection in self._kept:
                connection.close()
            self._kept.clear()
        self.engine.dispose()
