"""Database work written once and run the best way on each backend.

A plan is a generator that yields statements (``Run``, or ``RunMany`` for one statement
over many rows), receives each one's rows, and returns its result. The logic between the
statements (a count only when the page is full, the user's key before its values) is
written once, and the driver decides where the statements run:

- ``Database.read`` on SQLite: in one hop to a reading thread, on its connection;
  on PostgreSQL: on the event loop, on psycopg's ``AsyncConnection`` (``loop_pool``).
- ``Database.transact_plan``: on SQLite inside the writer thread's group commit, as any
  unit; on PostgreSQL in a transaction on the event loop, without threads.
- ``run_plan`` inside a unit that already has a connection (``Transaction.run``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from storage.prepared import Prepared

T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """One statement of a plan and its parameters; the plan receives its rows (none for
    a statement without a result)."""

    statement: Prepared
    params: Mapping[str, Any]


@dataclass(frozen=True)
class RunMany:
    """One statement run once per row (the driver's ``executemany``); the plan receives
    no rows. Every row has the same keys."""

    statement: Prepared
    rows: Sequence[Mapping[str, Any]]


Step = Run | RunMany
Plan = Generator[Step, list[Any], T]


def run_plan(conn: Connection, plan: Plan[T]) -> T:
    """Drive ``plan`` on a blocking connection: every statement on ``conn``."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, RunMany):
                step.statement.run_many(conn, step.rows)
                rows: list[Any] = []
            else:
                rows = step.statement.rows(conn, step.params)
            step = plan.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


def one_or_none(rows: list[Any]) -> Any:
    """The only row, or None; more than one is a bug in the statement."""
    if len(rows) > 1:
        raise ValueError(f"expected at most one row, got {len(rows)}")
    return rows[0] if rows else None
