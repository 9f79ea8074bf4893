"""PostgreSQL reads driven by the event loop, without threads, on asyncpg.

A read on a database thread pays, for each round trip, a wake-up of that thread and a
wait for the GIL that the busy event loop holds; measured with ``perf``, that switching
was about half of the gateway's CPU time under PostgreSQL load (docs/performance.md,
round 9). Here the event loop sends the statement on an asyncpg connection and goes on
with other requests until the answer arrives: no thread, no GIL hand-off. asyncpg rather
than psycopg's ``AsyncConnection``: the same lookup costs 23-26 µs of client CPU against
74-78 µs (round 19), and each statement is prepared once per connection.

Each process keeps up to ``size`` connections, each statement its own transaction (a
statement alone sees what it would see as the first statement of a READ COMMITTED
transaction, as the threads' reading connections do, decision 0021). A read holds one
of them for all its statements. A connection the server closed fails its statement;
the statement then runs once more on a new connection. A caller that waits longer than
``wait`` for a free connection gets ``DatabaseBusy``, as with the threads' pool.
Besides reads, only writes of one statement come here (``storage.one_statement``), each
its own transaction; a unit of several statements keeps its transaction on the threads
(decision 0007). Statements are written with SQLAlchemy Core and compiled for its
asyncpg dialect (``$1`` parameters, typed), once each (``storage.prepared``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shlex
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import orjson
from sqlalchemy import URL, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from storage.errors import PG_RETRYABLE, DatabaseBusy, DatabaseUnavailable
from storage.reads import Guarded, Plan, Read, one_or_none

T = TypeVar("T")

# Prepared statements kept per connection: every statement of the hot paths, with room.
_STATEMENT_CACHE = 512

# How a server error is raised, as SQLAlchemy raises psycopg's (by SQLSTATE class).
_ERROR_CLASSES: dict[str, type[sa_exc.DBAPIError]] = {
    "22": sa_exc.DataError,
    "23": sa_exc.IntegrityError,
    "0A": sa_exc.NotSupportedError,
    "42": sa_exc.ProgrammingError,
    "XX": sa_exc.InternalError,
}


# What a statement fails with when its connection is gone: the server's last word
# (``_lost``), or none at all.
_LOST = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


def _lost(exc: asyncpg.PostgresError) -> bool:
    """The server ended the session: a connection failure, or a shutdown or restart."""
    state = exc.sqlstate or ""
    return state.startswith("08") or state in {"57P01", "57P02", "57P03"}


@dataclass
class _Held:
    """The connection a read holds; replaced when the server closed it mid-read.
    ``busy`` while a statement is out: a read that ends then (cancelled) leaves a
    connection that must not serve the next one."""

    conn: asyncpg.Connection
    busy: bool = False


# libpq's connection parameters that asyncpg does not take (it would send them to the
# server as settings, which refuses them). They still apply to the threads' connections.
_LIBPQ_ONLY = frozenset(
    {
        "channel_binding",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "load_balance_hosts",
        "require_auth",
        "requirepeer",
        "sslcertmode",
        "sslcompression",
        "sslsni",
        "tcp_user_timeout",
    }
)


def connect_arguments(url: URL) -> tuple[str, dict[str, str], float]:
    """asyncpg's DSN, server settings and connect timeout for the engine's ``url``, which
    is written for libpq (psycopg, the threads' driver).

    libpq's ``options`` (``-c name=value``) become server settings and ``connect_timeout``
    the timeout; parameters only libpq knows are left out (``_LIBPQ_ONLY``)."""
    query = {name: value for name, value in url.query.items() if name not in _LIBPQ_ONLY}
    options = query.pop("options", "")
    settings = _server_options(options if isinstance(options, str) else " ".join(options))
    timeout = query.pop("connect_timeout", None)
    dsn = url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    # asyncpg's own default when none is given: 60 s.
    return dsn, settings, float(str(timeout)) if timeout else 60.0


def _server_options(options: str) -> dict[str, str]:
    """The settings of libpq's ``options``: ``-c name=value``, ``-cname=value`` or
    ``--name=value``, separated by spaces (a space in a value escaped by a backslash)."""
    settings: dict[str, str] = {}
    words = iter(shlex.split(options))
    for word in words:
        if word == "-c":
            pair = next(words, "")
        elif word.startswith(("-c", "--")):
            pair = word[2:]
        else:
            continue
        name, equals, value = pair.partition("=")
        if equals and name:
            settings[name.replace("-", "_")] = value
    return settings


class LoopReader:
    """A small pool of PostgreSQL connections owned by one event loop."""

    def __init__(self, engine: Engine, *, size: int, wait: float, retry_after: int) -> None:
        # JSON written as the engine writes it; read by the connections' codecs.
        self._dialect = PGDialect_asyncpg(  # type: ignore[no-untyped-call]
            json_serializer=getattr(engine.dialect, "_json_serializer", None),
            json_deserializer=orjson.loads,
        )
        self._dsn, self._settings, self._connect_timeout = connect_arguments(engine.url)
        self._size = max(1, size)
        self._wait = wait
        self._lock_timeout_ms = max(1, int(wait * 1000))
        self._retry_after = retry_after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._idle: collections.deque[asyncpg.Connection] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = (
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
        raw = [tuple(row) for row in await self._rows(held, Read(statement, params), raw=True)]
        if not raw:
            return [None, []]
        found = guard.make_row(raw[0][: guard.width])
        end = guard.width + then.width
        rows = [then.make_row(row[guard.width : end]) for row in raw]
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
            held.busy = True
            try:
                got = await held.conn.fetch(compiled.sql, *arguments)
            except _LOST as exc:
                if isinstance(exc, asyncpg.PostgresError) and not _lost(exc):
                    held.busy = False
                    raise self._translate(compiled.sql, exc) from exc
                if attempt == 2:
                    raise DatabaseUnavailable.unreachable(self._retry_after) from exc
                _drop(held.conn)
                held.conn = await self._connect()
                continue
            held.busy = False
            return got if raw else [compiled.make_row(row) for row in got]
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
            if not held.busy and not conn.is_closed():
                self._release(conn)
            else:
                _drop(conn)
                self._release(None)

    async def _acquire(self) -> asyncpg.Connection:
        """An idle connection, a new one while the pool has room, or else the first one
        freed, in the order the reads asked (a connection is handed to the read that has
        waited longest, never left for a newcomer to take)."""
        self._own_loop()
        if self._idle:
            return self._idle.pop()
        if self._open < self._size:
            self._open += 1
            return await self._connect_in_place()
        waiter: asyncio.Future[asyncpg.Connection | None]
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

    async def _connect_in_place(self) -> asyncpg.Connection:
        """Open a connection in a place of the pool already counted as open."""
        try:
            return await self._connect()
        except BaseException:
            self._release(None)
            raise

    def _release(self, conn: asyncpg.Connection | None) -> None:
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

    async def _connect(self) -> asyncpg.Connection:
        # As the engine's connections wait for a lock (one-statement writes take row
        # locks), set as the connection starts: no statement of its own.
        settings = {**self._settings, "lock_timeout": str(self._lock_timeout_ms)}
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self._dsn,
                server_settings=settings,
                statement_cache_size=_STATEMENT_CACHE,
                timeout=self._connect_timeout,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable.unreachable(self._retry_after) from exc
        # JSON read with orjson, as the engine's connections read it.
        await _json_codecs(conn)
        return conn

    def _own_loop(self) -> None:
        """Connections belong to the loop that opened them; a new loop (the CLI runs each
        command in ``asyncio.run``) starts a new pool."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._close_all()
            self._loop = loop
            # Kept referenced: the loop holds its tasks only weakly.
            self._keeper = loop.create_task(self._close_with(loop))

    async def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Waits until its loop ends, then closes the loop's connections while it can:
        ``asyncio.run`` cancels the tasks left before it closes the loop, and a
        connection's socket can no longer be closed cleanly once its loop is closed."""
        try:
            await loop.create_future()
        finally:
            if self._loop is loop:
                self._close_all()

    def _translate(self, sql: str, exc: asyncpg.PostgresError) -> Exception:
        state = exc.sqlstate or ""
        if state in PG_RETRYABLE:
            return DatabaseBusy.waited("The change waited too long for a lock", self._retry_after)
        if state[:2] in {"08", "53", "57", "58"}:  # connection, resources, shutdown, system
            return DatabaseUnavailable.unreachable(self._retry_after)
        # Raised as SQLAlchemy raises the threads' errors (IntegrityError, ...).
        error = _ERROR_CLASSES.get(state[:2], sa_exc.DatabaseError)
        return error(sql, None, exc, hide_parameters=True)

    def _close_all(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            _drop(conn)
        self._open = 0
        self._waiters.clear()

    def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        self._close_all()


def _drop(conn: asyncpg.Connection) -> None:
    """Close ``conn`` without awaiting. When its event loop was closed without ending its
    tasks first (``LoopReader._close_with``), the socket closes when collected."""
    with contextlib.suppress(RuntimeError):
        conn.terminate()


async def _json_codecs(conn: asyncpg.Connection) -> None:
    """json and jsonb read with orjson and written from the text SQLAlchemy's bind
    processors make (binary format: jsonb's carries a version byte, 1)."""
    await conn.set_type_codec(
        "json", encoder=str.encode, decoder=_loads(0), schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda text: b"\x01" + text.encode(),
        decoder=_loads(1),
        schema="pg_catalog",
        format="binary",
    )


def _loads(skip: int) -> Callable[[bytes], Any]:
    def loads(data: bytes) -> Any:
        return orjson.loads(data[skip:])

    return loads
