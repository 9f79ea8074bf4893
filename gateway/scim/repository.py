"""SQL for SCIM users: Core statements on one connection, inside the caller's transaction."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from gateway.scim.filters import CompiledFilter
from gateway.scim.records import UserRecord
from storage.tables import ScimClaim, ScimCredential, ScimUser, ScimUserValue

users = ScimUser.__table__  # type: ignore[attr-defined]
values = ScimUserValue.__table__  # type: ignore[attr-defined]
claims = ScimClaim.__table__  # type: ignore[attr-defined]
credentials = ScimCredential.__table__  # type: ignore[attr-defined]

_RESOURCE_COLUMNS = (
    users.c.pk,
    users.c.id,
    users.c.document,
    users.c.version,
    users.c.created_at,
    users.c.updated_at,
)


def credential_digest(conn: Connection, account_id: str) -> str | None:
    """The stored token hash of an account's SCIM credential, if any."""
    return conn.execute(
        select(credentials.c.token_sha256).where(credentials.c.account_id == account_id)
    ).scalar_one_or_none()


def load(conn: Connection, account_id: str, user_id: str, *, for_update: bool = False) -> Any:
    """One user of the account by SCIM id, or None (another account's id is None too)."""
    query = select(*_RESOURCE_COLUMNS).where(
        users.c.account_id == account_id, users.c.id == user_id
    )
    if for_update:
        query = query.with_for_update()
    return conn.execute(query).one_or_none()


@functools.lru_cache(maxsize=1024)
def _search_statements(compiled: CompiledFilter) -> tuple[Select[Any], Select[Any]]:
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
    return page, count


def search(
    conn: Connection,
    account_id: str,
    compiled: CompiledFilter,
    parameters: dict[str, Any],
    *,
    offset: int,
    limit: int,
) -> tuple[int, list[Any]]:
    """A page of matching users in creation order, and the total number that match."""
    page, count = _search_statements(compiled)
    bound = {**parameters, "account_id": account_id}
    rows = (
        list(conn.execute(page, {**bound, "offset": offset, "limit": limit}).all())
        if limit > 0
        else []
    )
    if offset == 0 and len(rows) < limit:
        return len(rows), rows
    return int(conn.execute(count, bound).scalar_one()), rows


def _write_children(conn: Connection, account_id: str, pk: int, record: UserRecord) -> None:
    if record.values:
        conn.execute(
            insert(values),
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
    conn.execute(
        insert(claims),
        [
            {"account_id": account_id, "kind": kind, "value_key": key, "user_pk": pk}
            for kind, key in sorted(record.claims)
        ],
    )


def insert_user(
    conn: Connection, account_id: str, user_id: str, record: UserRecord, now: datetime
) -> int:
    """Insert a user with its filter values and claims; returns its primary key."""
    pk = conn.execute(
        insert(users)
        .values(
            id=user_id,
            account_id=account_id,
            version=1,
            created_at=now,
            updated_at=now,
            **record.columns(),
        )
        .returning(users.c.pk)
    ).scalar_one()
    _write_children(conn, account_id, pk, record)
    return int(pk)


def update_user(
    conn: Connection, account_id: str, pk: int, record: UserRecord, now: datetime
) -> None:
    """Replace a user's stored state, filter values and claims."""
    conn.execute(
        update(users)
        .where(users.c.pk == pk)
        .values(version=users.c.version + 1, updated_at=now, **record.columns())
    )
    conn.execute(delete(values).where(values.c.user_pk == pk))
    conn.execute(delete(claims).where(claims.c.user_pk == pk))
    _write_children(conn, account_id, pk, record)


def delete_user(conn: Connection, pk: int) -> None:
    """Delete a user; its values and claims go with it."""
    conn.execute(delete(values).where(values.c.user_pk == pk))
    conn.execute(delete(claims).where(claims.c.user_pk == pk))
    conn.execute(delete(users).where(users.c.pk == pk))


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
