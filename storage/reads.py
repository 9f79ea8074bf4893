"""Reads written once and run the best way on each backend.

A read is a generator (a ``Plan``) that yields ``Read``s, each a prepared statement with
its parameters, receives each one's rows, and returns its result. The logic between the
statements (a count only when the page is full, a page found from a remembered position)
is written once. ``Database.read`` drives it: on SQLite in one hop to a reading thread,
all its statements on that thread's connection; on PostgreSQL on the event loop, all its
statements on one connection of the loop's pool (``storage.loop_reader``), without threads.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from storage.prepared import Prepared

T = TypeVar("T")


@dataclass(frozen=True)
class Read:
    """One statement of a plan and its parameters."""

    statement: Prepared
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Guarded:
    """A read of at most one row (``guard``), then ``then`` only if it found one.

    The plan receives ``[the guard's row or None, then's rows]`` (none without the guard's
    row). On PostgreSQL both are one statement, ``then`` joined to ``guard``: one round
    trip instead of two (``storage.loop_reader``). ``then`` may run even when the guard
    finds nothing, so it must be a read that only reads.
    """

    guard: Read
    then: Read


Plan = Generator[Read | Guarded, list[Any], T]


def run_plan(conn: Connection, plan: Plan[T]) -> T:
    """Drive ``plan`` on a blocking connection: every statement on ``conn``."""
    try:
        read = next(plan)
        while True:
            if isinstance(read, Guarded):
                found = one_or_none(read.guard.statement.rows(conn, read.guard.params))
                rows = [] if found is None else read.then.statement.rows(conn, read.then.params)
                read = plan.send([found, rows])
            else:
                read = plan.send(read.statement.rows(conn, read.params))
    except StopIteration as done:
        result: T = done.value
        return result


def one_or_none(rows: list[Any]) -> Any:
    """The only row, or None; more than one is a bug in the statement."""
    if len(rows) > 1:
        raise ValueError(f"expected at most one row, got {len(rows)}")
    return rows[0] if rows else None
