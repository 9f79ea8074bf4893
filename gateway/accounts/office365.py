"""Office 365 admin consent: the URL for the customer's administrator, and its answer.

The gateway builds the identity platform's admin-consent URL with a ``state`` that names
the account and carries a random part kept only as a digest, for one hour. The
administrator's browser comes back to ``/oauth/office365`` with the outcome, which is
recorded: consent granted, or denied with the reason Microsoft gives. When nothing comes
back (the administrator could not finish the round trip), the request shows as
``consent_not_detected`` once it expires: the administrator may have consented all the
same, so the integration can still be enabled, as the console allows. The ``tenant``
Microsoft returns is recorded for the admin's information, never used to authorize.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from gateway.accounts.models import OFFICE365, TEAMS, ConsentOut, IntegrationOut
from gateway.accounts.providers import put_integration, store_integration
from gateway.accounts.service import (
    find_integration,
    integration_out,
    require_account,
    shown_status,
)
from gateway.clients.identity import IdentityPlatform
from gateway.events.service import Actor
from gateway.security import token_digest, token_matches
from gateway.settings import Settings
from gateway.web.errors import BadRequest, Conflict, NotFound
from storage.engine import Database
from storage.rows import IntegrationRow
from storage.transaction import Transaction

CONSENT_PATH = "/oauth/office365"
CONSENT_ACTOR = Actor("Office 365 administrator", "consent")
CONSENT_SECONDS = 3600
PENDING = "consent_pending"
GRANTED = "consent_granted"
DENIED = "consent_denied"
NOT_DETECTED = "consent_not_detected"
ENABLED = "enabled"
# Microsoft's own app for its consent redirects is never ours; the reason text is shown.
MAX_REASON = 500


def redirect_uri(public_url: str) -> str:
    """Where the administrator's browser comes back (register it on the app)."""
    return public_url + CONSENT_PATH


def _consent_app(conn: Connection, settings: Settings, account_id: str) -> tuple[str, str]:
    """The client id to consent to and the tenant to name (``organizations`` if unknown)."""
    teams = find_integration(conn, account_id, TEAMS)
    tenant = (teams.config.get("tenant_id") if teams is not None else None) or "organizations"
    client_id = settings.o365_client_id or (
        teams.config.get("client_id") if teams is not None else None
    )
    if not client_id:
        raise Conflict(
            "No app to consent to: set GATEWAY_O365_CLIENT_ID (the gateway's own app "
            "registration) or configure the account's Microsoft Teams integration first."
        )
    return str(client_id), str(tenant)


async def request_consent(
    db: Database,
    *,
    identity: IdentityPlatform,
    settings: Settings,
    account_id: str,
    actor: Actor,
) -> ConsentOut:
    """A fresh admin-consent URL (adding the integration if needed); earlier ones stop working."""

    def plan(conn: Connection) -> tuple[str, str]:
        require_account(conn, account_id)
        return _consent_app(conn, settings, account_id)

    client_id, tenant = await db.query(plan)
    nonce = secrets.token_urlsafe(24)
    expires_at = time.time() + CONSENT_SECONDS
    config = {
        "name": "Microsoft Office 365",
        "client_id": client_id,
        "tenant": tenant,
        "consent": {"state": token_digest(nonce), "expires_at": expires_at},
    }
    await store_integration(
        db,
        account_id=account_id,
        kind=OFFICE365,
        config=config,
        secret=None,
        actor=actor,
        public_url=settings.public_url,
        status=PENDING,
    )
    callback = redirect_uri(settings.public_url)
    url = identity.admin_consent_url(
        tenant=tenant, client_id=client_id, redirect_uri=callback, state=f"{account_id}.{nonce}"
    )
    return ConsentOut(
        consent_url=url,
        redirect_uri=callback,
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )


class ConsentLinkInvalid(BadRequest):
    """The consent answer does not belong to a pending request (expired, replaced, forged)."""

    code = "consent_link_invalid"


async def record_consent(
    db: Database,
    *,
    state: str,
    error: str | None,
    description: str | None,
    tenant: str | None,
    actor: Actor,
    public_url: str,
) -> IntegrationOut:
    """Record the administrator's answer for the request ``state`` names."""
    account_id, _, nonce = state.partition(".")
    if not account_id or not nonce:
        raise ConsentLinkInvalid("The consent answer carries no valid state.")

    def work(tx: Transaction) -> IntegrationOut:
        tx.lock_account(account_id)
        row = find_integration(tx.conn, account_id, OFFICE365)
        consent = (row.config.get("consent") or {}) if row is not None else {}
        if (
            row is None
            or row.status != PENDING
            or not consent.get("state")
            or not token_matches(nonce, consent["state"])
            or float(consent.get("expires_at", 0)) < time.time()
        ):
            raise ConsentLinkInvalid(
                "This consent answer does not match a pending request: it expired or a newer "
                "one replaced it. Ask the CloudLink administrator for a new consent link."
            )
        outcome: dict[str, Any] = {"at": datetime.now(UTC).isoformat()}
        if error:
            status = DENIED
            outcome.update(error=error[:100], reason=(description or "")[:MAX_REASON])
        else:
            status = GRANTED
            outcome["tenant_reported"] = (tenant or "")[:64] or None
        config = {**row.config, "consent": {"outcome": outcome}}
        return _set(
            tx,
            row,
            account_id=account_id,
            status=status,
            config=config,
            actor=actor,
            public_url=public_url,
        )

    return await db.transact(work)


def _set(
    tx: Transaction,
    row: IntegrationRow,
    *,
    account_id: str,
    status: str,
    config: dict[str, Any],
    actor: Actor,
    public_url: str,
) -> IntegrationOut:
    return put_integration(
        tx,
        account_id=account_id,
        kind=OFFICE365,
        status=status,
        config=config,
        secret=row.secret,
        actor=actor,
        public_url=public_url,
    )


async def enable_office365(
    db: Database, *, account_id: str, enabled: bool, actor: Actor, public_url: str
) -> IntegrationOut:
    """Turn the integration on (after consent was granted or could not be detected) or off."""

    def work(tx: Transaction) -> IntegrationOut:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        row = find_integration(tx.conn, account_id, OFFICE365)
        if row is None:
            raise NotFound(
                "The Office 365 integration is not added: request consent first "
                "(`cloudlink-gateway integration office365-consent ACCOUNT_ID`)."
            )
        current = shown_status(OFFICE365, row.status, row.config)
        if not enabled:
            if current != ENABLED:
                return integration_out(row, public_url)
            outcome = (row.config.get("consent") or {}).get("outcome") or {}
            status = DENIED if outcome.get("error") else GRANTED
            return _set(
                tx,
                row,
                account_id=account_id,
                status=status,
                config=dict(row.config),
                actor=actor,
                public_url=public_url,
            )
        if current == ENABLED:
            return integration_out(row, public_url)
        if current == DENIED:
            reason = (row.config.get("consent") or {}).get("outcome", {}).get("reason", "")
            raise Conflict(
                f"The administrator denied consent ({reason or 'no reason given'}); request "
                "consent again and have it granted before enabling."
            )
        if current == PENDING:
            raise Conflict(
                "Consent was requested and no answer has come back yet; wait for the "
                "administrator (or for the request to expire) before enabling."
            )
        return _set(
            tx,
            row,
            account_id=account_id,
            status=ENABLED,
            config=dict(row.config),
            actor=actor,
            public_url=public_url,
        )

    return await db.transact(work)
