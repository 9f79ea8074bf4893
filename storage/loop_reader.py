"""PostgreSQL reads driven by the event loop, without threads.

A read on a database thread pays, for each round trip, a wake-up of that thread and a
wait for the GIL that the busy event loop holds; measured with ``perf``, that switching
was about half of the gateway's CPU time under PostgreSQL load (docs/performance.md,
round 9). Here the event loop sends the statement on a psycopg ``AsyncConnection`` and
goes on with other requests until the answer arrives: no thread, no GIL hand-off.

Each process keeps up to ``size`` connections in autocommit (a statement alone sees what
it would see as the first statement of a READ COMMITTED transaction, as the threads'
reading connections do, decision 0021). A read holds one of them for all its statements.
A connection the server closed fails its statement; the statement then runs once more on
a new connection. A caller that waits longer
than ``wait`` for a free connection gets ``DatabaseBusy``, as with the threads' pool.
Besides reads, only writes of one statement come here (``storage.one_statement``), each
its own transaction; a unit of several statements keeps its transaction on the threads
(decision 0007).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import set_json_loads
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from storage.errors import PG_RETRYABLE, DatabaseBusy, DatabaseUnavailable
from storage.reads import Guarded, Plan, Read, one_or_none

T = TypeVar("T")


@dataclass
class _Held:
    """The connection a read holds; replaced when the server closed it mid-read."""

    conn: psycopg.AsyncConnection[Any]


def _idle(conn: psycopg.AsyncConnection[Any]) -> bool:
    return conn.info.transaction_status == TransactionStatus.IDLE


class LoopReader:
    """A small pool of PostgreSQL connections owned by one event loop."""

    def __init__(self, engine: Engine, *, size: int, wait: float, retry_after: int) -> None:
        self._dialect = engine.dialect
        self._connect_args = engine.dialect.create_connect_args(engine.url)
        self._size = max(1, size)
        self._wait = wait
        self._lock_timeout_ms = max(1, int(wait * 1000))
        self._retry_after = retry_after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: collections.deque[psycopg.AsyncConnection[Any]] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[psycopg.AsyncConnection[Any] | None]] = (
            collections.deque()
        )

    async def read(self, plan: Plan[T]) -> T:
        """Drive ``plan`` on one pooled connection, each statement awaited on the loop.

        One connection for the whole plan: taking one per statement let a read lose its
        turn between its statements to reads that had just arrived (lookup p99 114 ms on
        one worker, against a p50 of 7 ms)."""
        async with self._connection() as held:
            try:
                read = next(plan)
                while True:
                    if isinstance(read, Guarded):
                        read = plan.send(await self._guarded(held, read))
                    else:
                        read = plan.send(await self._rows(held, read))
            except StopIteration as done:
                result: T = done.value
                return result

    async def _guarded(self, held: _Held, read: Guarded) -> list[Any]:
        """``[the guard's row or None, then's rows]`` in one statement (``joined``); in two
        when their parameters share a name but not its value."""
        shared = read.guard.params.keys() & read.then.params.keys()
        if any(read.guard.params[name] != read.then.params[name] for name in shared):
            found = one_or_none(await self._rows(held, read.guard))
            return [found, [] if found is None else await self._rows(held, read.then)]
        guard = read.guard.statement.compiled(self._dialect, tuple(read.guard.params))
        then = read.then.statement.compiled(self._dialect, tuple(read.then.params))
        statement = read.then.statement.joined_to(read.guard.statement)
        params = {**read.then.params, **read.guard.params}
        raw = await self._rows(held, Read(statement, params), raw=True)
        if not raw:
            return [None, []]
        found = guard.make_row(raw[0][: guard.width])
        rows = [then.make_row(row[guard.width : guard.width + then.width]) for row in raw]
        # The row number is NULL when ``then`` found nothing (one row, the guard's).
        return [found, [] if raw[0][-1] is None else rows]

    async def write(self, statement: Read) -> list[Any]:
        """Run one statement that writes, committed as it ends (autocommit); its rows.

        Like a read, it runs once more on a new connection when the server had closed
        the one it was sent on: ``Database.write_statement`` says what that means."""
        async with self._connection() as held:
            return await self._rows(held, statement)

    async def _rows(self, held: _Held, read: Read, *, raw: bool = False) -> list[Any]:
        """The statement's rows on the held connection; on a new one, once, when the
        server had closed it (a restart, an idle timeout): a read is safe to run again."""
        compiled = read.statement.compiled(self._dialect, tuple(read.params))
        arguments = compiled.arguments(read.params)
        for attempt in (1, 2):
            try:
                cursor = await held.conn.execute(compiled.sql, arguments)
                got = await cursor.fetchall() if cursor.description is not None else []
            except psycopg.Error as exc:
                if not held.conn.broken or attempt == 2:
                    raise self._translate(compiled.sql, exc) from exc
                held.conn.pgconn.finish()
                held.conn = await self._connect()
                continue
            return list(got) if raw else [compiled.make_row(row) for row in got]
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Held]:
        held = _Held(await self._acquire())
        try:
            yield held
        finally:
            # Only an idle connection goes to the next read: one left by a cancelled
            # statement may still be busy, one the server closed is broken. The others
            # are closed and their place in the pool freed.
            conn = held.conn
            if not conn.closed and not conn.broken and _idle(conn):
                self._release(conn)
            else:
                if not conn.closed:
                    conn.pgconn.finish()
                self._release(None)

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        """An idle connection, a new one while the pool has room, or else the first one
        freed, in the order the reads asked (a connection is handed to the read that has
        waited longest, never left for a newcomer to take)."""
        self._own_loop()
        if self._idle:
            return self._idle.pop()
        if self._open < self._size:
            self._open += 1
            return await self._connect_in_place()
        waiter: asyncio.Future[psycopg.AsyncConnection[Any] | None]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await asyncio.wait_for(waiter, self._wait)
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                # Handed a connection (or a place), then cancelled: pass it on.
                self._release(waiter.result())
            if isinstance(exc, TimeoutError):
                raise DatabaseBusy.waited(
                    "No database connection was free", self._retry_after
                ) from None
            raise
        return handed if handed is not None else await self._connect_in_place()

    async def _connect_in_place(self) -> psycopg.AsyncConnection[Any]:
        """Open a connection in a place of the pool already counted as open."""
        try:
            return await self._connect()
        except BaseException:
            self._release(None)
            raise

    def _release(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        """Give ``conn`` (or, for None, the place of a closed one) to the read that has
        waited longest, else back to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._open -= 1
        else:
            self._idle.append(conn)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        args, kwargs = self._connect_args
        # As the engine's connections wait for a lock (one-statement writes take row
        # locks), set as the connection starts: no statement of its own.
        options = f"{kwargs.get('options', '')} -c lock_timeout={self._lock_timeout_ms}"
        try:
            conn = await psycopg.AsyncConnection.connect(
                *args, autocommit=True, **{**kwargs, "options": options.strip()}
            )
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(
                f"The database cannot be reached; retry after {self._retry_after} s.",
                retry_after=self._retry_after,
            ) from exc
        # As the engine's connections read JSON (SQLAlchemy sets the same loader).
        set_json_loads(orjson.loads, conn)
        return conn

    def _own_loop(self) -> None:
        """Connections belong to the loop that opened them; a new loop (the CLI runs each
        command in ``asyncio.run``) starts a new pool."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._close_all()
            self._loop = loop

    def _translate(self, sql: str, exc: psycopg.Error) -> Exception:
        if exc.sqlstate in PG_RETRYABLE:
            return DatabaseBusy.waited("The change waited too long for a lock", self._retry_after)
        if isinstance(exc, psycopg.OperationalError):
            return DatabaseUnavailable(
                f"The database cannot be reached; retry after {self._retry_after} s.",
                retry_after=self._retry_after,
            )
        # Raised as SQLAlchemy would, as the threads' reads raise it.
        return DBAPIError.instance(
            sql, None, exc, psycopg.Error, hide_parameters=True, dialect=self._dialect
        )

    def _close_all(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            # Closes the socket without awaiting: the loop may be gone already.
            conn.pgconn.finish()
        self._open = 0
        self._waiters.clear()

    def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        self._close_all()
