"""Insert-unless-present, enforced by a unique constraint on both backends.

``INSERT ... ON CONFLICT DO NOTHING`` leaves the decision to the database: two
transactions racing with one key cannot both insert it, and the loser learns so from
``RETURNING`` instead of an error that would abort a PostgreSQL transaction. Statements
are built once per table and shape, as building one costs more than running it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.prepared import Prepared

_BUILT: dict[tuple[str, str, tuple[str, ...], int], Prepared] = {}


def _insert(dialect: str, table: Table) -> Any:
    return (postgres_insert if dialect == "postgresql" else sqlite_insert)(table)


def _statement(
    dialect: str, table: Table, columns: tuple[str, ...], only_if: Select[Any] | None
) -> Prepared:
    key = (dialect, table.name, columns, id(only_if))
    built = _BUILT.get(key)
    if built is None:
        source = select(*(bindparam(name, type_=table.c[name].type) for name in columns))
        if only_if is not None:
            source = source.where(only_if.exists())
        built = Prepared(
            _insert(dialect, table)
            .from_select(list(columns), source)
            .on_conflict_do_nothing()
            .returning(*table.primary_key.columns)
        )
        _BUILT[key] = built
    return built


def insert_if_absent(
    conn: Connection,
    table: Table,
    values: dict[str, Any],
    *,
    only_if: Select[Any] | None = None,
) -> bool:
    """Insert the row; False when a row with the same unique key is there already (or
    when ``only_if``, a query over the same parameters, finds nothing)."""
    statement = _statement(conn.dialect.name, table, tuple(values), only_if)
    return statement.run(conn, values).fetchone() is not None


def insert_all_if_absent(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose unique key is not there yet, in one statement (many rows)."""
    if rows:
        conn.execute(_insert(conn.dialect.name, table).on_conflict_do_nothing(), rows)
