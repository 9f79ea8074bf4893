"""SQL for SCIM users: Core statements on one connection, inside the caller's transaction."""

from __future__ import annotations

import functools
import time
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    CTE,
    Connection,
    Integer,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from gateway.presence.monitors import directory_ctes, directory_params
from gateway.scim.filters import CompiledFilter
from gateway.scim.positions import PER_ACCOUNT, Positions
from gateway.scim.rules import UserRecord
from storage.one_statement import MOMENT, enqueued, event_ctes, event_params
from storage.prepared import Prepared
from storage.reads import Plan, Read, one_or_none, run_plan
from storage.tables import (
    SCIM_CLAIMS,
    SCIM_CREDENTIALS,
    SCIM_USER_BLOCKS,
    SCIM_USER_COUNTS,
    SCIM_USER_VALUES,
    SCIM_USERS,
)
from storage.transaction import NewEvent

claims = SCIM_CLAIMS
counts = SCIM_USER_COUNTS
blocks = SCIM_USER_BLOCKS
credentials = SCIM_CREDENTIALS
values = SCIM_USER_VALUES
users = SCIM_USERS

_RESOURCE_COLUMNS = (
    users.c.pk,
    users.c.id,
    users.c.document,
    users.c.version,
    users.c.created_at,
    users.c.updated_at,
)


_CREDENTIAL = Prepared(
    select(credentials.c.token_sha256).where(credentials.c.account_id == bindparam("account_id"))
)
_LOAD = Prepared(
    select(*_RESOURCE_COLUMNS).where(
        users.c.account_id == bindparam("account_id"), users.c.id == bindparam("user_id")
    )
)


def credential_read(account_id: str) -> Read:
    """The stored token hash of an account's SCIM credential: at most one row."""
    return Read(_CREDENTIAL, {"account_id": account_id})


def found(account_id: str, user_id: str) -> Plan[Any]:
    """One user of the account by SCIM id, or None (another account's id is None too)."""
    return one_or_none((yield Read(_LOAD, {"account_id": account_id, "user_id": user_id})))


def load(conn: Connection, account_id: str, user_id: str) -> Any:
    """``found``, inside the caller's transaction."""
    return run_plan(conn, found(account_id, user_id))


@functools.lru_cache(maxsize=1024)
def _search_statements(compiled: CompiledFilter) -> tuple[Prepared, Prepared]:
    """The page and count queries of a compiled filter, built once per filter shape."""
    scope = (users.c.account_id == bindparam("account_id"), compiled.where)
    page = (
        select(*_RESOURCE_COLUMNS)
        .where(*scope)
        .order_by(users.c.pk)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    count = select(func.count()).select_from(users).where(*scope)
    return Prepared(page), Prepared(count)


_TOTAL = Prepared(
    select(
        func.coalesce(func.sum(counts.c.users), 0), func.coalesce(func.sum(counts.c.removed), 0)
    ).where(counts.c.account_id == bindparam("account_id"))
)
# The users to step over are stepped over in the (account_id, pk) index alone, which
# holds the key (an index-only scan); only the page's own rows are read from the table.
# An OFFSET on the page itself read every row it stepped over (3.2x at a million users
# on PostgreSQL for a page 8,000 users into its block).
_PAGE_START = (
    select(users.c.pk)
    .where(users.c.account_id == bindparam("account_id"), users.c.pk > bindparam("after"))
    .order_by(users.c.pk)
    .limit(1)
    .offset(bindparam("offset", type_=Integer))
    .scalar_subquery()
)
_PAGE_AFTER = Prepared(
    select(*_RESOURCE_COLUMNS)
    .where(users.c.account_id == bindparam("account_id"), users.c.pk >= _PAGE_START)
    .order_by(users.c.pk)
    .limit(bindparam("limit", type_=Integer))
)
# Users per block of keys (pk >> BLOCK_BITS), in key order: where a position lies.
BLOCK_BITS = 13
# Users stored from a block's start on before that start is remembered (``_block_start``).
SETTLED = 256
_BLOCKS = Prepared(
    select(blocks.c.block, func.sum(blocks.c.users))
    .where(blocks.c.account_id == bindparam("account_id"))
    .group_by(blocks.c.block)
    .order_by(blocks.c.block)
)
_POSITIONS = Positions()


def search(
    account_id: str,
    compiled: CompiledFilter,
    parameters: dict[str, Any],
    *,
    offset: int,
    limit: int,
) -> Plan[tuple[int, list[Any]]]:
    """A page of matching users in creation order, and the total number that match."""
    if compiled.everything:
        return (yield from _page_of_all(account_id, offset=offset, limit=limit))
    page, count = _search_statements(compiled)
    bound = {**parameters, "account_id": account_id}
    rows = (yield Read(page, {**bound, "offset": offset, "limit": limit})) if limit > 0 else []
    if offset == 0 and len(rows) < limit:
        return len(rows), rows
    (total,) = (yield Read(count, bound))[0]
    return int(total), rows


def _page_of_all(account_id: str, *, offset: int, limit: int) -> Plan[tuple[int, list[Any]]]:
    """A page of all the account's users: the total kept by the triggers of
    ``scim_user_counts``, the page found by seeking from where an earlier page ended
    (``positions``), or else from the block of keys that holds it (``scim_user_blocks``),
    rather than by stepping over every user before it."""
    total, removed = (yield Read(_TOTAL, {"account_id": account_id}))[0]
    total, removed = int(total), int(removed)
    if limit <= 0 or offset >= total:
        return total, []
    start = _POSITIONS.before(account_id, removed, offset) or (-1, 0)
    if offset - start[0] > 1 << BLOCK_BITS:
        # No earlier page ends near here: from the start of the block holding the
        # position, rather than stepping over more than a block's users.
        start = yield from _block_start(account_id, removed, offset)
    index, after = start
    bound = {"account_id": account_id, "after": after, "limit": limit, "offset": offset - index - 1}
    rows = yield Read(_PAGE_AFTER, bound)
    if rows:
        _POSITIONS.remember(account_id, removed, offset + len(rows) - 1, rows[-1].pk)
    return total, rows


def _block_start(account_id: str, removed: int, offset: int) -> Plan[tuple[int, int]]:
    """The position just before the block of keys that holds position ``offset``, and
    the key every user of that block is above: a page seeks there, then steps over at
    most a block's users.

    Where each block begins is remembered with the positions of pages (``positions``),
    so that the next deep page seeks there without summing the blocks again (at a million
    users, 1,968 counter rows: 0.65 ms on PostgreSQL), once ``SETTLED`` users were stored
    from there on: a user whose key was handed out before them and who is not stored yet
    would move that start (PostgreSQL hands keys out before commit), and no create waits
    for that many others. A removal forgets every position.
    """
    rows = [(int(b), int(n)) for b, n in (yield Read(_BLOCKS, {"account_id": account_id}))]
    # Half of an account's memory at most: for more blocks, every few blocks' start.
    step = -(-len(rows) // (PER_ACCOUNT // 2))
    total = sum(users for _block, users in rows)
    before = 0
    found: tuple[int, int] | None = None
    for at, (block, users) in enumerate(rows):
        start = (before - 1, (block << BLOCK_BITS) - 1)
        if before > 0 and total - before >= SETTLED and at % step == 0:
            _POSITIONS.remember(account_id, removed, *start)
        if found is None and before + users > offset:
            found = start
        before += users
    return found or (-1, 0)  # the counts moved meanwhile: from the start


# Statements are built once: building one per call (``.values(...)``) costs more than
# running it on SQLite. Values are passed as parameters at execution.
# The three INSERTs of every create run on the driver's cursor (``Prepared``): about 25 µs
# less each than through ``Connection.execute``.
_INSERT_USER = Prepared(insert(users).returning(users.c.pk))
_INSERT_VALUES = Prepared(insert(values))
_INSERT_CLAIMS = Prepared(insert(claims))
_UPDATE_USER = (
    update(users)
    .where(users.c.pk == bindparam("b_pk"), users.c.version == bindparam("b_version"))
    .values(version=users.c.version + 1)
)
_DELETE_VALUES = delete(values).where(values.c.user_pk == bindparam("b_pk"))
_DELETE_CLAIMS = delete(claims).where(claims.c.user_pk == bindparam("b_pk"))
_DELETE_USER = delete(users).where(users.c.pk == bindparam("b_pk"))


def _write_children(conn: Connection, account_id: str, pk: int, record: UserRecord) -> None:
    if record.values:
        _INSERT_VALUES.run_many(
            conn,
            [
                {
                    "user_pk": pk,
                    "account_id": account_id,
                    "attribute": v.attribute,
                    "type": v.type,
                    "value": v.value,
                    "value_key": v.value_key,
                    "primary": v.primary,
                }
                for v in record.values
            ],
        )
    _INSERT_CLAIMS.run_many(
        conn,
        [
            {"account_id": account_id, "kind": kind, "value_key": key, "user_pk": pk}
            for kind, key in sorted(record.claims)
        ],
    )


_USER_COLUMNS = (
    "id",
    "account_id",
    "version",
    "created_at",
    "updated_at",
    *UserRecord.COLUMNS,
)
_VALUE_COLUMNS = ("attribute", "type", "value", "value_key", "primary")


def _unnested(name: str, column: Any) -> Any:
    """The elements of the array parameter ``name``, one a row (arrays given side by side
    in one select list are read in step)."""
    return func.unnest(bindparam(name, type_=ARRAY(column.type)))


def _user_ctes() -> list[CTE]:
    """PostgreSQL: a user, its filter values and its claims as CTEs of one statement, the
    children taking the new key from the user's RETURNING (``new_user``)."""
    new = (
        insert(users)
        .values({name: bindparam(name, type_=users.c[name].type) for name in _USER_COLUMNS})
        .returning(users.c.pk)
        .cte("new_user")
    )
    new_values = insert(values).from_select(
        ["user_pk", "account_id", *_VALUE_COLUMNS],
        select(
            new.c.pk,
            bindparam("account_id", type_=values.c.account_id.type),
            *(_unnested(f"v_{name}", values.c[name]) for name in _VALUE_COLUMNS),
        ),
    )
    new_claims = insert(claims).from_select(
        ["user_pk", "account_id", "kind", "value_key"],
        select(
            new.c.pk,
            bindparam("account_id", type_=claims.c.account_id.type),
            _unnested("c_kind", claims.c.kind),
            _unnested("c_value_key", claims.c.value_key),
        ),
    )
    return [new, new_values.cte("new_values"), new_claims.cte("new_claims")]


def _create_postgres() -> Prepared:
    """PostgreSQL: a SCIM create as one statement, its own transaction
    (``storage.one_statement``): the user with its values and claims, its event with the
    event's deliveries, and, when the account watches Teams presence, its directory job.
    Returns the user's key and how many outbox rows were added."""
    user = _user_ctes()
    event = event_ctes()
    directory = directory_ctes(bindparam("account_id", type_=users.c.account_id.type))
    return Prepared(
        select(user[0].c.pk, enqueued(event[-1], directory[-1])).add_cte(
            *user[1:], *event, *directory
        )
    )


_CREATE_POSTGRES = _create_postgres()


def create_statement(
    account_id: str, user_id: str, record: UserRecord, now: datetime, event: NewEvent
) -> tuple[Prepared, dict[str, Any]]:
    """The one-statement create (PostgreSQL) and its parameters (``Database.write_statement``)."""
    # Claims in one sorted order, as _write_children writes them (see _write_claiming).
    ordered = sorted(record.claims)
    params = {
        **_new_user_row(account_id, user_id, record, now),
        **{f"v_{name}": [getattr(v, name) for v in record.values] for name in _VALUE_COLUMNS},
        "c_kind": [kind for kind, _key in ordered],
        "c_value_key": [key for _kind, key in ordered],
        **event_params(event),
        **directory_params(),
        MOMENT: time.time(),
    }
    return _CREATE_POSTGRES, params


def _new_user_row(
    account_id: str, user_id: str, record: UserRecord, now: datetime
) -> dict[str, Any]:
    """The ``scim_users`` row of a new user."""
    return {
        "id": user_id,
        "account_id": account_id,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        **record.columns(),
    }


def insert_user(
    conn: Connection, account_id: str, user_id: str, record: UserRecord, now: datetime
) -> int:
    """Insert a user with its filter values and claims; returns its primary key (SQLite:
    PostgreSQL creates in one statement, ``create_statement``)."""
    pk = int(_INSERT_USER.run(conn, _new_user_row(account_id, user_id, record, now)).fetchone()[0])
    _write_children(conn, account_id, pk, record)
    return pk


def update_user(
    conn: Connection,
    account_id: str,
    pk: int,
    *,
    version: int,
    record: UserRecord,
    now: datetime,
) -> bool:
    """Replace a user's stored state, filter values and claims, if it is still at ``version``.

    False (and nothing written) when another write got there first.
    """
    updated = conn.execute(
        _UPDATE_USER, {"b_pk": pk, "b_version": version, "updated_at": now, **record.columns()}
    )
    if updated.rowcount != 1:
        return False
    conn.execute(_DELETE_VALUES, {"b_pk": pk})
    conn.execute(_DELETE_CLAIMS, {"b_pk": pk})
    _write_children(conn, account_id, pk, record)
    return True


def delete_user(conn: Connection, pk: int) -> None:
    """Delete a user; its values and claims go with it (ON DELETE CASCADE)."""
    conn.execute(_DELETE_USER, {"b_pk": pk})


def claim_holder(
    conn: Connection, account_id: str, wanted: set[tuple[str, str]], exclude_pk: int | None
) -> str | None:
    """The kind of the first wanted claim held by another user, if any."""
    for kind, key in sorted(wanted):
        holder = conn.execute(
            select(claims.c.user_pk).where(
                claims.c.account_id == account_id,
                claims.c.kind == kind,
                claims.c.value_key == key,
            )
        ).scalar_one_or_none()
        if holder is not None and holder != exclude_pk:
            return kind
    return None
