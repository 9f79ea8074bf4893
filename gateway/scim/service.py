"""SCIM user operations: each one validation, one transaction, one event.

Parsing and CloudLink's rules run before the write transaction opens, so the write
lock is held only for the statements. A change and its event commit together.
Uniqueness is enforced by ``scim_claims``' primary key; when the database refuses a
claim, the holder is looked up only to name the clashing attribute.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, TypeVar, Unpack

from scim2_models import Context
from sqlalchemy.exc import IntegrityError

from gateway.events.service import SCIM_ACTOR, new_event
from gateway.presence.monitors import users_changed
from gateway.scim import repository as repo
from gateway.scim.filters import compile_filter
from gateway.scim.parsing import (
    apply_patch,
    new_user_document,
    parse_patch,
    parse_user,
    stored_user,
)
from gateway.scim.rules import (
    CLAIM_ATTRIBUTES,
    UserRecord,
    changed_properties,
    normalized_user,
    record_of,
    to_record,
)
from gateway.scim.schema import list_response
from gateway.web.errors import Conflict, InvalidValue, NotFound, Uniqueness
from storage.engine import Database
from storage.reads import Plan
from storage.tables import utcnow
from storage.transaction import NewEvent, Transaction

T = TypeVar("T")

CLAIM_RETRIES = 3


@dataclass(frozen=True)
class Tenant:
    """The account a SCIM request acts on, and its tenant URL (for meta.location)."""

    account_id: str
    base_url: str

    @property
    def users_url(self) -> str:
        """The URL of the account's /Users collection."""
        return f"{self.base_url}/Users"


def render(
    tenant: Tenant, user_id: str, document: dict[str, Any], created: datetime, updated: datetime
) -> dict[str, Any]:
    """A stored user as a SCIM resource."""
    resource = dict(document)
    resource["id"] = user_id
    resource["meta"] = {
        "resourceType": "User",
        "created": created,
        "lastModified": updated,
        "location": f"{tenant.users_url}/{user_id}",
    }
    return resource


def _render_row(tenant: Tenant, row: Any) -> dict[str, Any]:
    return render(tenant, row.id, row.document, row.created_at, row.updated_at)


@dataclass
class _Attempt:
    """What one write attempt tried to claim, to name the clash if the database refuses."""

    claims: set[tuple[str, str]] = field(default_factory=set)
    user_pk: int | None = None


async def _write_claiming(
    db: Database,
    tenant: Tenant,
    work: Callable[[Transaction, _Attempt], T],
    *,
    lock: bool = True,
) -> T:
    """Run ``work`` in a write transaction; turn a refused claim into a 409 naming it.

    ``lock``: serialize with the account's other writers first. A create does without:
    it only inserts, its claims in one sorted order, so two creates wanting one value
    queue on the unique index (the second then fails and gets its 409) and cannot
    deadlock. Holding the account's lock through the commit capped an account's creates
    at one per commit on PostgreSQL (about 200 a second here).
    """
    for _ in range(CLAIM_RETRIES):
        attempt = _Attempt()

        def unit(tx: Transaction, attempt: _Attempt = attempt) -> T:
            if lock:
                tx.lock_account(tenant.account_id)
            return work(tx, attempt)

        try:
            return await db.transact(unit)
        except IntegrityError:
            await _refused_claim(db, tenant, attempt.claims, attempt.user_pk)
    raise Conflict("The user changed concurrently; retry the request.")


async def _refused_claim(
    db: Database, tenant: Tenant, claims: set[tuple[str, str]], user_pk: int | None
) -> None:
    """``Uniqueness`` naming the attribute of a claim another user holds; returns when none
    is held any more (the clashing transaction rolled back in between: try again)."""
    kind = await db.query(repo.claim_holder, tenant.account_id, claims, user_pk)
    if kind is not None:
        attribute = CLAIM_ATTRIBUTES[kind]
        raise Uniqueness(
            f"{attribute}: the value is already used by another user of this "
            f"account; {attribute} must be unique within the account."
        ) from None


def _update_type(before: dict[str, Any], after: dict[str, Any]) -> str:
    if before.get("active") and not after.get("active"):
        return "user.deactivated"
    if not before.get("active") and after.get("active"):
        return "user.reactivated"
    return "user.updated"


class _UserChange(TypedDict):
    """A change to a user, as its event tells it."""

    action: str
    type_: str
    user_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _record(tx: Transaction, tenant: Tenant, **change: Unpack[_UserChange]) -> None:
    """The change's event, and the presence directory's upkeep when it matters."""
    tx.record_event(_user_event(tenant, **change))
    if _presence_matters(change["before"], change["after"]):
        users_changed(tx, tenant.account_id)


def _user_event(tenant: Tenant, **change: Unpack[_UserChange]) -> NewEvent:
    """The event of a change to a user, as Provisioning by SCIM."""
    before, after = change["before"], change["after"]
    return new_event(
        account_id=tenant.account_id,
        actor=SCIM_ACTOR,
        action=change["action"],
        asset="User",
        asset_id=change["user_id"],
        category="Provisioning",
        type=change["type_"],
        properties_changed=changed_properties(before, after),
        details=after if after is not None else (before or {}),
    )


def _presence_matters(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    """Whether the change adds, removes or re-addresses a user Teams presence may watch."""
    if before is None or after is None:
        return True
    keys = ("email", "otherEmail", "active")
    return any(before.get(key) != after.get(key) for key in keys)


async def create_user(db: Database, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    """POST /Users."""
    record = record_of(new_user_document(body, tenant.users_url))
    user_id = str(uuid.uuid4())
    now = utcnow()
    if db.writes_in_one_statement:
        await _create_in_one_statement(db, tenant, user_id, record, now)
        return render(tenant, user_id, record.document, now, now)

    def work(tx: Transaction, attempt: _Attempt) -> None:
        attempt.claims = record.claims
        repo.insert_user(tx.conn, tenant.account_id, user_id, record, now)
        _record(
            tx,
            tenant,
            action="Create",
            type_="user.created",
            user_id=user_id,
            before=None,
            after=normalized_user(user_id, record.document),
        )

    await _write_claiming(db, tenant, work, lock=False)
    return render(tenant, user_id, record.document, now, now)


async def _create_in_one_statement(
    db: Database, tenant: Tenant, user_id: str, record: UserRecord, now: datetime
) -> None:
    """PostgreSQL: the create, its event and the presence directory's job in one statement
    (``repo.create_statement``), one round trip with its commit and no thread.

    A refused claim is named as ``_write_claiming`` names it. A claim held by this very
    user means the statement had committed and was run again (its connection lost the
    answer): the user is there, once."""
    after = normalized_user(user_id, record.document)
    event = _user_event(
        tenant, action="Create", type_="user.created", user_id=user_id, before=None, after=after
    )
    statement, params = repo.create_statement(tenant.account_id, user_id, record, now, event)
    for _ in range(CLAIM_RETRIES):
        try:
            await db.write_statement(statement, params)
        except IntegrityError:
            if await db.read(repo.found, tenant.account_id, user_id) is not None:
                return
            await _refused_claim(db, tenant, record.claims, None)
        else:
            return
    raise Conflict("The user changed concurrently; retry the request.")


def get_user(tenant: Tenant, user_id: str) -> Plan[dict[str, Any]]:
    """GET /Users/{id}, as a read plan (the route runs it with the token's check)."""
    row = yield from repo.found(tenant.account_id, user_id)
    if row is None:
        raise _not_found(user_id)
    return _render_row(tenant, row)


def _not_found(user_id: str) -> NotFound:
    return NotFound(f"No user with id {user_id} in this account.")


def list_users(
    tenant: Tenant, *, filter_text: str | None, start_index: int, count: int
) -> Plan[dict[str, Any]]:
    """GET /Users with filter and pagination (1-based ``startIndex``), as a read plan
    (the route runs it with the token's check)."""
    compiled, parameters = compile_filter(filter_text or "")
    total, rows = yield from repo.search(
        tenant.account_id, compiled, parameters, offset=start_index - 1, limit=count
    )
    resources = [_render_row(tenant, row) for row in rows]
    return list_response(resources, total=total, start_index=start_index)


class _Stale(Exception):
    """The user changed between the read and the write of an update."""


async def _update(
    db: Database,
    tenant: Tenant,
    user_id: str,
    change: Callable[[dict[str, Any]], UserRecord | None],
) -> dict[str, Any]:
    """Read a user, let ``change`` compute its new record, store it if unchanged meanwhile.

    ``change`` (a PATCH applied by scim2-models, CloudLink's rules) runs outside the write
    transaction; the write only lands on the version it was computed from, else the
    update starts over from a fresh read.
    """
    for _ in range(CLAIM_RETRIES):
        row = await db.read(repo.found, tenant.account_id, user_id)
        if row is None:
            raise _not_found(user_id)
        record = change(row.document)
        if record is None or record.document == row.document:
            return _render_row(tenant, row)
        try:
            return await _store_update(db, tenant, row, record)
        except _Stale:
            continue
    raise Conflict("The user changed concurrently; retry the request.")


async def _store_update(
    db: Database, tenant: Tenant, row: Any, record: UserRecord
) -> dict[str, Any]:
    """Write ``record`` over ``row`` with its event; ``_Stale`` if ``row`` changed meanwhile."""
    before = normalized_user(row.id, row.document)
    after = normalized_user(row.id, record.document)
    now = utcnow()

    def work(tx: Transaction, attempt: _Attempt) -> None:
        attempt.claims, attempt.user_pk = record.claims, row.pk
        if not repo.update_user(
            tx.conn, tenant.account_id, row.pk, version=row.version, record=record, now=now
        ):
            raise _Stale
        _record(
            tx,
            tenant,
            action="Edit",
            type_=_update_type(before, after),
            user_id=row.id,
            before=before,
            after=after,
        )

    await _write_claiming(db, tenant, work)
    return render(tenant, row.id, record.document, row.created_at, now)


async def replace_user(
    db: Database, tenant: Tenant, user_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """PUT /Users/{id}: the body becomes the user's whole state."""
    if "id" in body and body["id"] != user_id:
        raise InvalidValue("The id in the body does not match the id in the URL.")
    record = to_record(parse_user(body, Context.RESOURCE_REPLACEMENT_REQUEST, tenant.users_url))
    return await _update(db, tenant, user_id, lambda _document: record)


async def patch_user(
    db: Database, tenant: Tenant, user_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """PATCH /Users/{id}: apply the operations to the stored user, then CloudLink's rules."""
    patch = parse_patch(body, tenant.users_url)

    def change(document: dict[str, Any]) -> UserRecord | None:
        user = stored_user(document)
        if not apply_patch(patch, user):
            return None
        return to_record(user)

    return await _update(db, tenant, user_id, change)


async def delete_user(db: Database, tenant: Tenant, user_id: str) -> None:
    """DELETE /Users/{id}: the user is gone (404) from now on."""

    def work(tx: Transaction) -> None:
        tx.lock_account(tenant.account_id)
        row = repo.load(tx.conn, tenant.account_id, user_id)
        if row is None:
            raise _not_found(user_id)
        repo.delete_user(tx.conn, row.pk)
        _record(
            tx,
            tenant,
            action="Delete",
            type_="user.deleted",
            user_id=user_id,
            before=normalized_user(user_id, row.document),
            after=None,
        )

    await db.transact(work)
