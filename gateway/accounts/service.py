"""Accounts and integrations: keyword-only functions shared by the admin API and the CLI.

Each change is one ``Database.transact`` unit that writes the change and its event
together; reads go through ``Database.query``.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

from sqlalchemy import Connection, Select, delete, func, insert, select, update

from gateway.accounts.models import (
    AVAILABLE_KINDS,
    AZURE_AD_SYNC,
    CMCOM,
    MAX_NAME,
    OFFICE365,
    TEAMS,
    TWILIO,
    AccountOut,
    IntegrationOut,
    ScimKeysOut,
)
from gateway.events.service import Actor, record_event
from gateway.security import new_token, token_digest
from gateway.web.errors import BadRequest, Conflict, InvalidValue, NotFound
from storage.engine import Database
from storage.rows import AccountRow, IntegrationRow
from storage.tables import ACCOUNTS, CHANNELS, INTEGRATIONS, SCIM_CREDENTIALS, utcnow
from storage.transaction import Transaction

SCIM_PREFIX = "/scim/v2"

# Every integration the data model holds; the ones a later version will configure can be
# stored already, but only ``AVAILABLE_KINDS`` can be added by an admin now.
KINDS = {
    AZURE_AD_SYNC: "Azure AD Sync",
    TWILIO: "Twilio",
    CMCOM: "CM.com",
    TEAMS: "Microsoft Teams",
    OFFICE365: "Microsoft Office 365",
}


def tenant_url(public_url: str, account_id: str) -> str:
    """The Tenant URL an admin pastes into Entra for ``account_id``."""
    return f"{public_url}{SCIM_PREFIX}/{account_id}"


def account_out(row: AccountRow) -> AccountOut:
    """The API shape of an account row."""
    return AccountOut(
        id=row.id, name=row.name, created_at=row.created_at, updated_at=row.updated_at
    )


def shown_status(kind: str, status: str, config: dict[str, Any]) -> str:
    """The status to show: an Office 365 consent request nobody answered in time is not
    detectable (the administrator may have consented without coming back)."""
    if kind == OFFICE365 and status == "consent_pending":
        consent = config.get("consent") or {}
        if float(consent.get("expires_at", 0)) < time.time():
            return "consent_not_detected"
    return status


def _shown_config(config: dict[str, Any]) -> dict[str, Any]:
    consent = config.get("consent")
    if not isinstance(consent, dict) or "state" not in consent:
        return dict(config)
    return {**config, "consent": {k: v for k, v in consent.items() if k != "state"}}


def integration_out(row: IntegrationRow, public_url: str) -> IntegrationOut:
    return IntegrationOut(
        kind=row.kind,
        name=KINDS.get(row.kind, row.kind),
        status=shown_status(row.kind, row.status, row.config),
        config=_shown_config(row.config),
        created_at=row.created_at,
        updated_at=row.updated_at,
        tenant_url=tenant_url(public_url, row.account_id) if row.kind == AZURE_AD_SYNC else None,
    )


# An operator's change in the account's history.
admin_event = functools.partial(record_event, category="Admin")


def clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise InvalidValue("name must not be empty.")
    if len(cleaned) > MAX_NAME:
        raise InvalidValue(f"name must be at most {MAX_NAME} characters.")
    if "\x00" in cleaned:
        raise InvalidValue("name may not contain NUL characters.")
    return cleaned


def require_account(conn: Connection, account_id: str) -> AccountRow:
    """The account's row, or 404."""
    row = conn.execute(select(ACCOUNTS).where(ACCOUNTS.c.id == account_id)).one_or_none()
    if row is None:
        raise NotFound(f"No account {account_id!r}.")
    return row


async def create_account(db: Database, *, name: str, actor: Actor) -> AccountOut:
    """Create a customer account."""
    cleaned = clean_name(name)
    account_id = str(uuid.uuid4())
    now = utcnow()

    def work(tx: Transaction) -> AccountOut:
        tx.conn.execute(
            insert(ACCOUNTS).values(id=account_id, name=cleaned, created_at=now, updated_at=now)
        )
        admin_event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Create",
            asset="Account",
            asset_id=account_id,
            type="account.created",
            properties_changed=["name"],
            details={"id": account_id, "name": cleaned},
        )
        return account_out(require_account(tx.conn, account_id))

    return await db.transact(work)


async def rename_account(db: Database, *, account_id: str, name: str, actor: Actor) -> AccountOut:
    """Change an account's display name."""
    cleaned = clean_name(name)

    def work(tx: Transaction) -> AccountOut:
        tx.lock_account(account_id)
        before = require_account(tx.conn, account_id)
        if before.name != cleaned:
            tx.conn.execute(
                update(ACCOUNTS)
                .where(ACCOUNTS.c.id == account_id)
                .values(name=cleaned, updated_at=utcnow())
            )
            admin_event(
                tx,
                account_id=account_id,
                actor=actor,
                action="Edit",
                asset="Account",
                asset_id=account_id,
                type="account.updated",
                properties_changed=["name"],
                details={"id": account_id, "name": cleaned},
            )
        return account_out(require_account(tx.conn, account_id))

    return await db.transact(work)


def _list_accounts(conn: Connection) -> list[AccountOut]:
    rows = conn.execute(select(ACCOUNTS).order_by(ACCOUNTS.c.created_at, ACCOUNTS.c.id)).all()
    return [account_out(row) for row in rows]


async def list_accounts(db: Database) -> list[AccountOut]:
    """Every account, oldest first."""
    return await db.query(_list_accounts)


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_accounts(
    db: Database, *, text: str, offset: int, limit: int
) -> tuple[list[AccountOut], int]:
    """A page of the accounts whose name holds ``text`` (any case) or whose id is
    ``text``, by name; and how many match. A partner's gateway holds thousands."""
    wanted = text.strip()

    def read(conn: Connection) -> tuple[list[AccountOut], int]:
        matching = select(ACCOUNTS)
        if wanted:
            matching = matching.where(
                ACCOUNTS.c.name.ilike(_like(wanted), escape="\\") | (ACCOUNTS.c.id == wanted)
            )
        total = conn.execute(select(func.count()).select_from(matching.subquery())).scalar_one()
        rows = conn.execute(
            matching.order_by(ACCOUNTS.c.name, ACCOUNTS.c.id).offset(offset).limit(limit)
        ).all()
        return [account_out(row) for row in rows], int(total)

    return await db.query(read)


async def get_account(db: Database, *, account_id: str) -> AccountOut:
    """One account."""
    return await db.query(lambda conn: account_out(require_account(conn, account_id)))


async def list_integrations(
    db: Database, *, account_id: str, public_url: str
) -> list[IntegrationOut]:
    """The integrations added to an account (secrets never included)."""

    def read(conn: Connection) -> list[IntegrationOut]:
        require_account(conn, account_id)
        rows = conn.execute(
            select(INTEGRATIONS)
            .where(INTEGRATIONS.c.account_id == account_id)
            .order_by(INTEGRATIONS.c.created_at)
        ).all()
        return [integration_out(row, public_url) for row in rows]

    return await db.query(read)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidValue(f"Unknown integration {kind!r}; known: {', '.join(sorted(KINDS))}.")
    if kind not in AVAILABLE_KINDS:
        raise BadRequest(
            f"The {KINDS[kind]} integration cannot be configured in this version; "
            f"available: {', '.join(AVAILABLE_KINDS)}."
        )


def _insert_integration(tx: Transaction, account_id: str, kind: str, actor: Actor) -> None:
    now = utcnow()
    tx.conn.execute(
        insert(INTEGRATIONS).values(
            id=str(uuid.uuid4()),
            account_id=account_id,
            kind=kind,
            status="setup_incomplete",
            config={},
            created_at=now,
            updated_at=now,
        )
    )
    admin_event(
        tx,
        account_id=account_id,
        actor=actor,
        action="Create",
        asset="Integration",
        asset_id=kind,
        type="integration.added",
        properties_changed=["kind"],
        details={"kind": kind, "name": KINDS[kind]},
    )


def _integration(account_id: str, kind: str) -> Select[Any]:
    return select(INTEGRATIONS).where(
        INTEGRATIONS.c.account_id == account_id, INTEGRATIONS.c.kind == kind
    )


def find_integration(conn: Connection, account_id: str, kind: str) -> IntegrationRow | None:
    """The account's integration of this kind, if it has one."""
    return conn.execute(_integration(account_id, kind)).one_or_none()


def written_integration(conn: Connection, account_id: str, kind: str) -> IntegrationRow:
    """The integration this transaction has just written (there is one)."""
    return conn.execute(_integration(account_id, kind)).one()


async def add_integration(
    db: Database, *, account_id: str, kind: str, actor: Actor, public_url: str
) -> IntegrationOut:
    """Add an integration to an account (409 if it is there already)."""
    _check_kind(kind)

    def work(tx: Transaction) -> IntegrationOut:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        if find_integration(tx.conn, account_id, kind) is not None:
            raise Conflict(f"The {KINDS[kind]} integration is already added to this account.")
        _insert_integration(tx, account_id, kind, actor)
        return integration_out(written_integration(tx.conn, account_id, kind), public_url)

    return await db.transact(work)


# The channel provider each messaging integration carries.
CHANNEL_PROVIDERS = {TWILIO: "twilio", CMCOM: "cm"}


def _refuse_if_channels_use(conn: Connection, account_id: str, kind: str) -> None:
    provider = CHANNEL_PROVIDERS.get(kind)
    if provider is None:
        return
    rows = conn.execute(
        select(CHANNELS.c.id, CHANNELS.c.type, CHANNELS.c.number, CHANNELS.c.pages)
        .where(
            CHANNELS.c.account_id == account_id,
            CHANNELS.c.provider == provider,
            CHANNELS.c.deleted_at.is_(None),
        )
        .order_by(CHANNELS.c.created_at)
    ).all()
    if rows:
        listing = "; ".join(
            f"{row.id} ({row.type} {row.number or ', '.join(row.pages)})" for row in rows
        )
        raise Conflict(
            f"The {KINDS[kind]} integration is used by {len(rows)} channel(s): {listing}. "
            "Delete them first (`cloudlink-gateway channel delete ACCOUNT_ID ID ... "
            "--confirm confirm`)."
        )


async def remove_integration(db: Database, *, account_id: str, kind: str, actor: Actor) -> None:
    """Remove an integration; removing Azure AD Sync revokes the SCIM token at once."""
    if kind not in KINDS:
        raise InvalidValue(f"Unknown integration {kind!r}; known: {', '.join(sorted(KINDS))}.")

    def work(tx: Transaction) -> None:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        if find_integration(tx.conn, account_id, kind) is None:
            raise NotFound(f"The {KINDS[kind]} integration is not added to this account.")
        _refuse_if_channels_use(tx.conn, account_id, kind)
        tx.conn.execute(
            delete(INTEGRATIONS).where(
                INTEGRATIONS.c.account_id == account_id, INTEGRATIONS.c.kind == kind
            )
        )
        if kind == AZURE_AD_SYNC:
            tx.conn.execute(
                delete(SCIM_CREDENTIALS).where(SCIM_CREDENTIALS.c.account_id == account_id)
            )
        admin_event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Delete",
            asset="Integration",
            asset_id=kind,
            type="integration.removed",
            properties_changed=["kind"],
            details={"kind": kind, "name": KINDS[kind]},
        )

    await db.transact(work)


async def generate_scim_keys(
    db: Database, *, account_id: str, actor: Actor, public_url: str
) -> ScimKeysOut:
    """ "Generate keys": a new secret token; the previous one stops working at once.

    Adds the Azure AD Sync integration first when the account does not have it yet.
    """
    token = new_token()
    now = utcnow()

    def work(tx: Transaction) -> None:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        if find_integration(tx.conn, account_id, AZURE_AD_SYNC) is None:
            _insert_integration(tx, account_id, AZURE_AD_SYNC, actor)
        tx.conn.execute(delete(SCIM_CREDENTIALS).where(SCIM_CREDENTIALS.c.account_id == account_id))
        tx.conn.execute(
            insert(SCIM_CREDENTIALS).values(
                account_id=account_id, token_sha256=token_digest(token), created_at=now
            )
        )
        tx.conn.execute(
            update(INTEGRATIONS)
            .where(INTEGRATIONS.c.account_id == account_id, INTEGRATIONS.c.kind == AZURE_AD_SYNC)
            .values(
                status="keys_generated",
                updated_at=now,
                config={"keys_generated_at": now.isoformat()},
            )
        )
        admin_event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Edit",
            asset="Integration",
            asset_id=AZURE_AD_SYNC,
            type="integration.keys_generated",
            properties_changed=["secret_token"],
            details={"kind": AZURE_AD_SYNC, "tenant_url": tenant_url(public_url, account_id)},
        )

    await db.transact(work)
    return ScimKeysOut(tenant_url=tenant_url(public_url, account_id), secret_token=token)
