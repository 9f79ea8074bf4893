"""The Microsoft Teams integration of an account: the Azure app registration, checked first.

The tenant id, client id and client secret are checked by asking the identity platform for
an app token (client credentials) before anything is written: a refused secret is the
admin's to fix and leaves the stored integration as it was. The secret is encrypted and
shown as a mask. Presence monitors sign in to the same app registration, so a change of
tenant or client id leaves their tokens worthless: they are marked ``needs_update`` and
the answer says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, func, select, update

from gateway.accounts.models import TEAMS, IntegrationOut, TeamsSettings
from gateway.accounts.providers import integration_secrets, mask, store_integration
from gateway.accounts.service import clean_name, find_integration, require_account
from gateway.clients.http import ProviderError
from gateway.clients.identity import AppCredentials, IdentityError, IdentityPlatform
from gateway.events.service import Actor
from gateway.security import SecretBox
from gateway.web.errors import Unprocessable, UpstreamUnavailable
from storage.engine import Database
from storage.tables import PRESENCE_MONITORS, utcnow
from storage.transaction import Transaction

NEEDS_UPDATE = "needs_update"


@dataclass(frozen=True)
class TeamsConfig:
    """The account's Teams integration as the presence features use it."""

    credentials: AppCredentials
    presence_to_teams: bool
    presence_from_teams: bool
    secret_expires: date | None


def teams_config(conn: Connection, secrets: SecretBox, account_id: str) -> TeamsConfig | None:
    """The account's configured Teams integration, or None."""
    found = integration_secrets(conn, secrets, account_id, TEAMS)
    if found is None:
        return None
    config, values = found
    expires = config.get("secret_expires")
    return TeamsConfig(
        credentials=AppCredentials(
            config["tenant_id"], config["client_id"], values["client_secret"]
        ),
        presence_to_teams=bool(config.get("presence_to_teams", False)),
        presence_from_teams=bool(config.get("presence_from_teams", True)),
        secret_expires=date.fromisoformat(expires) if expires else None,
    )


async def check_app(identity: IdentityPlatform, creds: AppCredentials) -> None:
    """Ask for an app token; a refusal is a 422 worded with the identity platform's reason."""
    try:
        await identity.app_token(creds, fresh=True)
    except IdentityError as exc:
        raise Unprocessable(
            f"The identity platform refused this tenant id, client id and secret ({exc}); "
            "check them in the Azure app registration (Certificates & secrets: the secret's "
            "Value, not its ID). Nothing was saved."
        ) from exc
    except ProviderError as exc:
        raise UpstreamUnavailable(
            f"The identity platform could not be reached to check the app ({exc}); nothing "
            "was saved, try again."
        ) from exc


def _mark_monitors(
    tx: Transaction, account_id: str, old: dict[str, Any], body: TeamsSettings
) -> list[str]:
    """Monitors signed in to another tenant or app need renewal; the warnings to show."""
    if not old or (old.get("tenant_id"), old.get("client_id")) == (
        body.tenant_id.lower(),
        body.client_id.lower(),
    ):
        return []
    count = tx.conn.execute(
        select(func.count()).where(PRESENCE_MONITORS.c.account_id == account_id)
    ).scalar_one()
    if not count:
        return []
    tx.conn.execute(
        update(PRESENCE_MONITORS)
        .where(PRESENCE_MONITORS.c.account_id == account_id)
        .values(status=NEEDS_UPDATE, updated_at=utcnow())
    )
    return [
        f"The tenant id or client id changed: the {count} presence monitor(s) of this account "
        "no longer work and are marked needs_update; renew each one (`cloudlink-gateway "
        "monitor renew ACCOUNT_ID MONITOR_ID`) to sign it in to the new app."
    ]


async def configure_teams(
    db: Database,
    *,
    secrets: SecretBox,
    identity: IdentityPlatform,
    account_id: str,
    body: TeamsSettings,
    actor: Actor,
    public_url: str,
) -> IntegrationOut:
    """Check the app registration, then store it (adding the integration)."""
    await db.query(require_account, account_id)
    await check_app(identity, AppCredentials(body.tenant_id, body.client_id, body.client_secret))

    def previous(conn: Connection) -> dict[str, Any]:
        row = find_integration(conn, account_id, TEAMS)
        return dict(row.config) if row is not None else {}

    old = await db.query(previous)
    config = {
        "name": clean_name(body.name),
        "tenant_id": body.tenant_id.lower(),
        "client_id": body.client_id.lower(),
        "client_secret": mask(body.client_secret),
        "secret_expires": body.secret_expires.isoformat() if body.secret_expires else None,
        "presence_to_teams": (
            body.presence_to_teams
            if body.presence_to_teams is not None
            else bool(old.get("presence_to_teams", False))
        ),
        "presence_from_teams": (
            body.presence_from_teams
            if body.presence_from_teams is not None
            else bool(old.get("presence_from_teams", True))
        ),
    }
    return await store_integration(
        db,
        account_id=account_id,
        kind=TEAMS,
        config=config,
        secret=secrets.encrypt(json.dumps({"client_secret": body.client_secret})),
        actor=actor,
        public_url=public_url,
        also=lambda tx, stored: _mark_monitors(tx, account_id, stored, body),
    )
