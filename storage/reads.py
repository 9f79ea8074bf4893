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


Plan = Generator[Read, list[Any], T]


def run_plan(conn: Connection, plan: Plan[T]) -> T:
    """Drive ``plan`` on a blocking connection: every statement on ``conn``."""
    try:
        read = next(plan)
        while True:
            read = plan.send(read.statement.rows(conn, read.params))
    except StopIteration as done:
        result: T = done.value
        return result


def one_or_none(rows: list[Any]) -> Any:
    """The only row, or None; more than one is a bug in the statement."""
    if len(rows) > 1:
        raise ValueError(f"expected at most one row, got {len(rows)}")
    return rows[0] if rows else None
