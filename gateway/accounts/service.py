"""Accounts and integrations: keyword-only functions shared by the admin API and the CLI.

Each function is one transaction that writes its change and its event together.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from gateway.errors import BadRequest, Conflict, InvalidValue, NotFound
from gateway.events.service import Actor, lock_account, record_event
from gateway.scim.auth import tenant_url
from gateway.security import new_token, token_digest
from storage.engine import Database
from storage.tables import Account, Integration, ScimCredential, utcnow

accounts = Account.__table__  # type: ignore[attr-defined]
integrations = Integration.__table__  # type: ignore[attr-defined]
credentials = ScimCredential.__table__  # type: ignore[attr-defined]

AZURE_AD_SYNC = "azure_ad_sync"

# Every integration the data model holds; the ones a later version will configure can be
# stored already, but only these can be added by an admin now.
KINDS = {
    AZURE_AD_SYNC: "Azure AD Sync",
    "twilio": "Twilio",
    "cmcom": "CM.com",
    "microsoft_teams": "Microsoft Teams",
    "office365": "Microsoft Office 365",
}
AVAILABLE_KINDS = (AZURE_AD_SYNC,)
MAX_NAME = 200


@dataclass(frozen=True)
class ScimKeys:
    """What an admin copies into Entra. The token is shown this once and never again."""

    tenant_url: str
    secret_token: str


def _account_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _integration_view(row: Any, public_url: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "kind": row.kind,
        "name": KINDS.get(row.kind, row.kind),
        "status": row.status,
        "config": row.config,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
    if row.kind == AZURE_AD_SYNC:
        view["tenant_url"] = tenant_url(public_url, row.account_id)
    return view


# An operator's change in the account's history.
_admin_event = functools.partial(record_event, event_type="Admin")


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise InvalidValue("name must not be empty.")
    if len(cleaned) > MAX_NAME:
        raise InvalidValue(f"name must be at most {MAX_NAME} characters.")
    return cleaned


def require_account(conn: Connection, account_id: str) -> Any:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).one_or_none()
    if row is None:
        raise NotFound(f"No account {account_id!r}.")
    return row


def create_account(db: Database, *, name: str, actor: Actor) -> dict[str, Any]:
    """Create a customer account."""
    cleaned = _clean_name(name)
    account_id = str(uuid.uuid4())
    now = utcnow()
    with db.write() as conn:
        conn.execute(
            insert(accounts).values(id=account_id, name=cleaned, created_at=now, updated_at=now)
        )
        _admin_event(
            conn,
            account_id=account_id,
            actor=actor,
            action="Create",
            asset="Account",
            asset_id=account_id,
            type="account.created",
            properties_changed=["name"],
            details={"id": account_id, "name": cleaned},
        )
        row = require_account(conn, account_id)
    return _account_view(row)


def rename_account(db: Database, *, account_id: str, name: str, actor: Actor) -> dict[str, Any]:
    """Change an account's display name."""
    cleaned = _clean_name(name)
    with db.write() as conn:
        lock_account(conn, account_id)
        before = require_account(conn, account_id)
        if before.name != cleaned:
            conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(name=cleaned, updated_at=utcnow())
            )
            _admin_event(
                conn,
                account_id=account_id,
                actor=actor,
                action="Edit",
                asset="Account",
                asset_id=account_id,
                type="account.updated",
                properties_changed=["name"],
                details={"id": account_id, "name": cleaned},
            )
        row = require_account(conn, account_id)
    return _account_view(row)


def list_accounts(db: Database) -> list[dict[str, Any]]:
    """Every account, oldest first."""
    with db.read() as conn:
        rows = conn.execute(select(accounts).order_by(accounts.c.created_at, accounts.c.id)).all()
    return [_account_view(row) for row in rows]


def get_account(db: Database, *, account_id: str) -> dict[str, Any]:
    """One account."""
    with db.read() as conn:
        return _account_view(require_account(conn, account_id))


def list_integrations(db: Database, *, account_id: str, public_url: str) -> list[dict[str, Any]]:
    """The integrations added to an account (secrets never included)."""
    with db.read() as conn:
        require_account(conn, account_id)
        rows = conn.execute(
            select(integrations)
            .where(integrations.c.account_id == account_id)
            .order_by(integrations.c.created_at)
        ).all()
    return [_integration_view(row, public_url) for row in rows]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidValue(f"Unknown integration {kind!r}; known: {', '.join(sorted(KINDS))}.")
    if kind not in AVAILABLE_KINDS:
        raise BadRequest(
            f"The {KINDS[kind]} integration cannot be configured in this version; "
            f"available: {', '.join(AVAILABLE_KINDS)}."
        )


def _insert_integration(conn: Connection, account_id: str, kind: str, actor: Actor) -> None:
    now = utcnow()
    conn.execute(
        insert(integrations).values(
            id=str(uuid.uuid4()),
            account_id=account_id,
            kind=kind,
            status="setup_incomplete",
            config={},
            created_at=now,
            updated_at=now,
        )
    )
    _admin_event(
        conn,
        account_id=account_id,
        actor=actor,
        action="Create",
        asset="Integration",
        asset_id=kind,
        type="integration.added",
        properties_changed=["kind"],
        details={"kind": kind, "name": KINDS[kind]},
    )


def _find_integration(conn: Connection, account_id: str, kind: str) -> Any:
    return conn.execute(
        select(integrations).where(
            integrations.c.account_id == account_id, integrations.c.kind == kind
        )
    ).one_or_none()


def add_integration(
    db: Database, *, account_id: str, kind: str, actor: Actor, public_url: str
) -> dict[str, Any]:
    """Add an integration to an account (409 if it is there already)."""
    _check_kind(kind)
    with db.write() as conn:
        lock_account(conn, account_id)
        require_account(conn, account_id)
        if _find_integration(conn, account_id, kind) is not None:
            raise Conflict(f"The {KINDS[kind]} integration is already added to this account.")
        _insert_integration(conn, account_id, kind, actor)
        row = _find_integration(conn, account_id, kind)
    return _integration_view(row, public_url)


def remove_integration(db: Database, *, account_id: str, kind: str, actor: Actor) -> None:
    """Remove an integration; removing Azure AD Sync revokes the SCIM token at once."""
    if kind not in KINDS:
        raise InvalidValue(f"Unknown integration {kind!r}; known: {', '.join(sorted(KINDS))}.")
    with db.write() as conn:
        lock_account(conn, account_id)
        require_account(conn, account_id)
        if _find_integration(conn, account_id, kind) is None:
            raise NotFound(f"The {KINDS[kind]} integration is not added to this account.")
        conn.execute(
            delete(integrations).where(
                integrations.c.account_id == account_id, integrations.c.kind == kind
            )
        )
        if kind == AZURE_AD_SYNC:
            conn.execute(delete(credentials).where(credentials.c.account_id == account_id))
        _admin_event(
            conn,
            account_id=account_id,
            actor=actor,
            action="Delete",
            asset="Integration",
            asset_id=kind,
            type="integration.removed",
            properties_changed=["kind"],
            details={"kind": kind, "name": KINDS[kind]},
        )


def generate_scim_keys(db: Database, *, account_id: str, actor: Actor, public_url: str) -> ScimKeys:
    """ "Generate keys": a new secret token; the previous one stops working at once.

    Adds the Azure AD Sync integration first when the account does not have it yet.
    """
    token = new_token()
    now = utcnow()
    with db.write() as conn:
        lock_account(conn, account_id)
        require_account(conn, account_id)
        if _find_integration(conn, account_id, AZURE_AD_SYNC) is None:
            _insert_integration(conn, account_id, AZURE_AD_SYNC, actor)
        conn.execute(delete(credentials).where(credentials.c.account_id == account_id))
        conn.execute(
            insert(credentials).values(
                account_id=account_id, token_sha256=token_digest(token), created_at=now
            )
        )
        conn.execute(
            update(integrations)
            .where(integrations.c.account_id == account_id, integrations.c.kind == AZURE_AD_SYNC)
            .values(
                status="keys_generated",
                updated_at=now,
                config={"keys_generated_at": now.isoformat()},
            )
        )
        _admin_event(
            conn,
            account_id=account_id,
            actor=actor,
            action="Edit",
            asset="Integration",
            asset_id=AZURE_AD_SYNC,
            type="integration.keys_generated",
            properties_changed=["secret_token"],
            details={"kind": AZURE_AD_SYNC, "tenant_url": tenant_url(public_url, account_id)},
        )
    return ScimKeys(tenant_url(public_url, account_id), token)
