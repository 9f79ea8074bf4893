"""The Twilio and CM.com integrations of an account: credentials checked, then stored.

Secrets (Auth Token, product token) are encrypted with the key ring before they reach
the database and appear in responses only as a mask. A Twilio pair is checked against
Twilio before anything is written: a rejected pair is the admin's to fix and leaves
the stored integration as it was.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, insert, select, update

from gateway.accounts.models import CMCOM, TWILIO, CmSettings, IntegrationOut, TwilioSettings
from gateway.accounts.service import (
    admin_event,
    clean_name,
    find_integration,
    integration_out,
    require_account,
    written_integration,
)
from gateway.clients.http import ProviderError
from gateway.clients.twilio import TwilioApi, TwilioCredentials
from gateway.events.service import Actor
from gateway.security import SecretBox
from gateway.web.errors import Unprocessable, UpstreamUnavailable
from storage.engine import Database
from storage.tables import INTEGRATIONS, utcnow
from storage.transaction import Transaction

ACTIVE = "active"


def mask(secret: str) -> str:
    """What a response shows of a secret: enough to recognise which one, no more."""
    return "••••" + secret[-4:] if len(secret) >= 12 else "••••"


async def configure_twilio(
    db: Database,
    *,
    secrets: SecretBox,
    twilio: TwilioApi,
    account_id: str,
    body: TwilioSettings,
    actor: Actor,
    public_url: str,
) -> IntegrationOut:
    """Check the SID / token pair with Twilio, then store it (adding the integration)."""
    await db.query(require_account, account_id)
    creds = TwilioCredentials(body.account_sid, body.auth_token)
    try:
        await twilio.check_credentials(creds)
    except ProviderError as exc:
        if exc.retryable:
            raise UpstreamUnavailable(
                f"Twilio could not be reached to check the credentials ({exc}); nothing was "
                "saved, try again."
            ) from exc
        raise Unprocessable(
            f"Twilio refused this Account SID and Auth Token ({exc.code or exc.status}: "
            f"{exc.message.rsplit(': ', 1)[-1]}); nothing was saved."
        ) from exc
    config = {
        "name": clean_name(body.name),
        "account_sid": body.account_sid,
        "auth_token": mask(body.auth_token),
    }
    secret = secrets.encrypt(json.dumps({"auth_token": body.auth_token}))
    return await store_integration(
        db,
        account_id=account_id,
        kind=TWILIO,
        config=config,
        secret=secret,
        actor=actor,
        public_url=public_url,
    )


async def configure_cm(
    db: Database,
    *,
    secrets: SecretBox,
    account_id: str,
    body: CmSettings,
    actor: Actor,
    public_url: str,
) -> IntegrationOut:
    """Store the CM.com account and product token (adding the integration)."""
    config = {
        "name": clean_name(body.name),
        "cm_account_id": body.cm_account_id,
        "product_token": mask(body.product_token),
    }
    secret = secrets.encrypt(json.dumps({"product_token": body.product_token}))
    return await store_integration(
        db,
        account_id=account_id,
        kind=CMCOM,
        config=config,
        secret=secret,
        actor=actor,
        public_url=public_url,
    )


def put_integration(
    tx: Transaction,
    *,
    account_id: str,
    kind: str,
    status: str,
    config: dict[str, Any],
    secret: str | None,
    actor: Actor,
    public_url: str,
) -> IntegrationOut:
    """Insert or replace an integration's status, settings and secret, with its event
    (the settings in the event leave out what only the gateway needs: ``consent``)."""
    now = utcnow()
    existing = find_integration(tx.conn, account_id, kind)
    if existing is None:
        tx.conn.execute(
            insert(INTEGRATIONS).values(
                id=str(uuid.uuid4()),
                account_id=account_id,
                kind=kind,
                status=status,
                config=config,
                secret=secret,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        tx.conn.execute(
            update(INTEGRATIONS)
            .where(INTEGRATIONS.c.id == existing.id)
            .values(status=status, config=config, secret=secret, updated_at=now)
        )
    shown = {key: value for key, value in config.items() if key != "consent"}
    admin_event(
        tx,
        account_id=account_id,
        actor=actor,
        action="Create" if existing is None else "Edit",
        asset="Integration",
        asset_id=kind,
        type="integration.configured",
        properties_changed=sorted({*shown, "status"}),
        details={"kind": kind, "status": status, **shown},
    )
    return integration_out(written_integration(tx.conn, account_id, kind), public_url)


async def store_integration(
    db: Database,
    *,
    account_id: str,
    kind: str,
    config: dict[str, Any],
    secret: str | None,
    actor: Actor,
    public_url: str,
    status: str = ACTIVE,
    also: Callable[[Transaction, dict[str, Any]], list[str]] | None = None,
) -> IntegrationOut:
    """``put_integration`` in a transaction of its own, under the account's lock.

    ``also`` runs in the same transaction with the previous settings and returns warnings
    for the answer (what the change means elsewhere).
    """

    def work(tx: Transaction) -> IntegrationOut:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        existing = find_integration(tx.conn, account_id, kind)
        warnings = also(tx, dict(existing.config) if existing is not None else {}) if also else []
        stored = put_integration(
            tx,
            account_id=account_id,
            kind=kind,
            status=status,
            config=config,
            secret=secret,
            actor=actor,
            public_url=public_url,
        )
        return stored.model_copy(update={"warnings": warnings or None})

    return await db.transact(work)


def integration_secrets(
    conn: Connection, secrets: SecretBox, account_id: str, kind: str
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The configured integration's settings and decrypted secrets, or None if not set up."""
    row = conn.execute(
        select(INTEGRATIONS.c.config, INTEGRATIONS.c.secret, INTEGRATIONS.c.status).where(
            INTEGRATIONS.c.account_id == account_id, INTEGRATIONS.c.kind == kind
        )
    ).one_or_none()
    if row is None or row.status != ACTIVE or not row.secret:
        return None
    values: dict[str, str] = json.loads(secrets.decrypt(row.secret))
    return dict(row.config), values


def twilio_credentials(
    conn: Connection, secrets: SecretBox, account_id: str
) -> TwilioCredentials | None:
    """The account's Twilio credentials, or None when the integration is not configured."""
    found = integration_secrets(conn, secrets, account_id, TWILIO)
    if found is None:
        return None
    config, values = found
    return TwilioCredentials(config["account_sid"], values["auth_token"])


def cm_product_token(conn: Connection, secrets: SecretBox, account_id: str) -> str | None:
    """The account's CM.com product token, or None when the integration is not configured."""
    found = integration_secrets(conn, secrets, account_id, CMCOM)
    return None if found is None else found[1]["product_token"]
