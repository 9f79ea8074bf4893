"""The SQLite writer thread of one process: group commit, bounded waits for the lock.

SQLite has one writer at a time per file. Each process funnels its writes through one
thread that owns the write connection:

- A unit waits at most ``lock_timeout`` seconds from its submission for the write lock
  (held by another process: the CLI, a backup, another gateway worker). Past that it
  fails with ``DatabaseBusy`` and nothing of it was written.
- Once the lock is held, every unit queued by then joins the transaction, each in its
  own savepoint, and all share one commit: under load the cost of a durable commit
  (the fsync) is paid once per batch, not once per request.
- A unit whose caller went away before it started (``Future.cancel``) is skipped.
- The writers of several processes on one file (``serve --workers N``, the CLI) take
  turns fairly through ``ProcessTurns`` instead of SQLite's busy handler.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from storage.errors import DatabaseBusy
from storage.transaction import Transaction

Work = Callable[[Transaction], Any]


def is_lock_error(exc: OperationalError) -> bool:
    """True when SQLite refused because another connection holds the lock."""
    message = str(exc.orig).lower()
    return "locked" in message or "busy" in message


class ProcessTurns:
    """Turns on one SQLite file's write lock, shared fairly by the processes that write it.

    SQLite's busy handler polls with sleeps that grow to 100 ms, and the process that has
    just committed usually takes the lock again before a sleeping one wakes: measured
    with two workers under create load, writes were slower than with one (530 against
    647 creates/s, p99 1.6 s). Two advisory locks beside the file make a turnstile: a
    writer passes the turnstile, takes the write lock, then leaves the turnstile; a
    writer that has just committed queues at the turnstile behind whoever is waiting
    there, so the lock alternates between processes. The kernel releases both locks of a
    process that dies. A unit waits for its turn no longer than its own lock timeout.
    """

    def __init__(self, database: Path) -> None:
        self._turnstile = os.open(f"{database}-turnstile", os.O_RDWR | os.O_CREAT, 0o600)
        self._write = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, deadline: float) -> bool:
        """Wait for this process's turn until ``deadline`` (monotonic); False if it passed.

        Polled rather than blocking, so that the wait is bounded by the unit's own lock
        timeout; fairness holds because a waiter keeps the turnstile while it polls for
        the write lock, so the writer that has just released cannot take it back.
        """
        if not _poll_lock(self._turnstile, deadline):
            return False
        try:
            return _poll_lock(self._write, deadline)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)

    def release(self) -> None:
        """End this process's turn."""
        fcntl.flock(self._write, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock files (releasing anything held)."""
        os.close(self._turnstile)
        os.close(self._write)


def _poll_lock(fd: int, deadline: float) -> bool:
    """Take the exclusive lock of ``fd`` before ``deadline``, polling (0.1 to 1 ms apart)."""
    pause = 0.0001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.001)
        else:
            return True


@dataclass
class _Unit:
    work: Work
    deadline: float
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


_STOP = object()


def _reset(connection: Connection) -> None:
    """End whatever transaction is open, on SQLAlchemy's side and on SQLite's."""
    connection.rollback()
    raw = connection.connection.driver_connection
    if raw is not None and raw.in_transaction:
        raw.execute("ROLLBACK")


class SqliteWriter:
    """One thread, one write connection, and the queue of units waiting for it."""

    def __init__(
        self,
        engine: Engine,
        *,
        lock_timeout: float,
        retry_after: int,
        max_batch: int = 256,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._on_commit = on_commit
        database = engine.url.database
        self._turns = ProcessTurns(Path(database)) if database and database != ":memory:" else None
        self._lock_timeout = lock_timeout
        self._retry_after = retry_after
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting: list[_Unit] = []
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, work: Work) -> concurrent.futures.Future[Any]:
        """Queue ``work``; the future settles after its commit (or its failure)."""
        unit = _Unit(work, time.monotonic() + self._lock_timeout)
        self._queue.put(unit)
        return unit.future

    def stop(self) -> None:
        """Finish the queued units, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        connection = self._engine.connect().execution_options(sqlite_begin="IMMEDIATE")
        try:
            while True:
                first = self._waiting.pop(0) if self._waiting else self._queue.get()
                if first is _STOP:
                    break
                if not first.future.set_running_or_notify_cancel():
                    continue
                if self._turns is not None and not self._turns.acquire(first.deadline):
                    first.future.set_exception(self._busy())
                    self._fail_expired()
                    continue
                try:
                    if self._begin(connection, first):
                        self._commit(connection, [first, *self._take_more()])
                finally:
                    if self._turns is not None:
                        self._turns.release()
        finally:
            for unit in self._waiting:
                if unit is not _STOP and unit.future.set_running_or_notify_cancel():
                    unit.future.set_exception(self._busy())
            connection.close()
            if self._turns is not None:
                self._turns.close()

    def _busy(self) -> DatabaseBusy:
        return DatabaseBusy.waited("The database is locked by another process", self._retry_after)

    def _begin(self, connection: Connection, first: _Unit) -> bool:
        """Take the write lock within ``first``'s deadline; on failure, fail it and the late."""
        remaining_ms = int((first.deadline - time.monotonic()) * 1000)
        if remaining_ms > 0:
            raw = connection.connection.driver_connection
            assert raw is not None
            raw.execute(f"PRAGMA busy_timeout={remaining_ms}")
            try:
                connection.begin()
            except OperationalError as exc:
                _reset(connection)
                if not is_lock_error(exc):
                    first.future.set_exception(exc)
                    return False
            else:
                return True
        first.future.set_exception(self._busy())
        self._fail_expired()
        return False

    def _fail_expired(self) -> None:
        """Move the queue aside, failing every unit whose wait is already over."""
        now = time.monotonic()
        while True:
            try:
                unit = self._queue.get_nowait()
            except queue.Empty:
                break
            self._waiting.append(unit)
        kept = []
        for unit in self._waiting:
            if unit is not _STOP and unit.deadline <= now:
                if unit.future.set_running_or_notify_cancel():
                    unit.future.set_exception(self._busy())
            else:
                kept.append(unit)
        self._waiting = kept

    def _take_more(self) -> list[_Unit]:
        """The units queued meanwhile that may join the transaction (not the stop mark)."""
        taken: list[_Unit] = []
        while len(taken) < self._max_batch - 1:
            if self._waiting:
                unit = self._waiting[0]
                if unit is _STOP:
                    break
                self._waiting.pop(0)
            else:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is _STOP:
                    self._waiting.append(unit)
                    break
            if unit.future.set_running_or_notify_cancel():
                taken.append(unit)
        return taken

    def _commit(self, connection: Connection, batch: list[_Unit]) -> None:
        """Run the batch's units and commit them together; settle each one's future.

        Never raises: whatever fails, the thread goes on with the next batch.
        """
        try:
            outcomes = self._run_units(connection, batch)
            connection.commit()
        except Exception as exc:  # the commit itself failed: nothing of the batch is stored
            _reset(connection)
            for unit in batch:
                unit.future.set_exception(exc)
            return
        if self._on_commit is not None:
            self._on_commit(len(batch))
        for unit, error, result in outcomes:
            if error is not None:
                unit.future.set_exception(error)
            else:
                unit.future.set_result(result)

    @staticmethod
    def _run_units(
        connection: Connection, batch: list[_Unit]
    ) -> list[tuple[_Unit, BaseException | None, Any]]:
        """Each unit in its own savepoint; a unit alone needs none (its failure is final)."""
        if len(batch) == 1:
            return [(batch[0], None, batch[0].work(Transaction(connection)))]
        # The savepoints are the driver's own: SQLAlchemy's nested transactions cost more
        # than a webhook's statements (measured: 9 % of its CPU). A unit may still open
        # SQLAlchemy savepoints of its own inside this one.
        raw = connection.connection.driver_connection
        assert raw is not None
        outcomes: list[tuple[_Unit, BaseException | None, Any]] = []
        for unit in batch:
            raw.execute("SAVEPOINT unit")
            try:
                result = unit.work(Transaction(connection))
            except Exception as exc:  # the unit's own failure, reported to its caller
                raw.execute("ROLLBACK TO unit")
                raw.execute("RELEASE unit")
                outcomes.append((unit, exc, None))
            else:
                raw.execute("RELEASE unit")
                outcomes.append((unit, None, result))
        return outcomes
