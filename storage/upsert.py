"""Insert-unless-present, enforced by a unique constraint on both backends.

``INSERT ... ON CONFLICT DO NOTHING`` leaves the decision to the database: two
transactions racing with one key cannot both insert it, and the loser learns so from
the row count instead of an error that would abort a PostgreSQL transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert


def insert_unless_present(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert the row; False when a row with the same unique key is there already."""
    if conn.dialect.name == "postgresql":
        statement: Any = postgres_insert(table).values(**values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    # RETURNING rather than the row count, which drivers do not all report for upserts.
    returned = conn.execute(statement.returning(*table.primary_key.columns)).first()
    return returned is not None
