"""A monitor's sign-in: its link starts an authorization code flow with PKCE against the
account's Teams app, and the answer, checked to be the monitor's own account, leaves the
monitor Authorized with its refresh token kept encrypted.

The start link (a week) and each sign-in (15 minutes) are proved by random tokens kept
as digests; a newer sign-in replaces the pending one.
"""

from __future__ import annotations

import time
from secrets import token_urlsafe

from sqlalchemy import Connection, select, update

from gateway.clients.http import ProviderError
from gateway.clients.identity import IdentityError, IdentityPlatform, UserTokens, pkce_pair
from gateway.folding import fold
from gateway.presence.models import MonitorOut
from gateway.presence.monitors import (
    AUTHORIZED,
    CALLBACK_PATH,
    DIRECTORY,
    MONITOR_ACTOR,
    SIGN_IN_SECONDS,
    UPKEEP,
    MonitorSecrets,
    change_secrets,
    find_monitor,
    monitor_event,
    monitor_out,
    set_monitor,
)
from gateway.presence.teams import TeamsConfig, teams_config
from gateway.security import SecretBox, token_digest, token_matches
from gateway.web.errors import BadRequest, Conflict, UpstreamUnavailable
from storage.engine import Database
from storage.rows import MonitorRow
from storage.tables import PRESENCE_MONITORS, utcnow
from storage.transaction import Transaction


class SignInLinkInvalid(BadRequest):
    """A sign-in link or answer that belongs to no pending sign-in."""

    code = "sign_in_link_invalid"


def _pending(conn: Connection, monitor_id: str, nonce: str) -> MonitorRow:
    row = conn.execute(
        select(PRESENCE_MONITORS).where(PRESENCE_MONITORS.c.id == monitor_id)
    ).one_or_none()
    if (
        row is None
        or not row.auth_state
        or not token_matches(nonce, row.auth_state)
        or float(row.auth_expires_at or 0) < time.time()
    ):
        raise SignInLinkInvalid(
            "This sign-in does not match a pending one: it expired (15 minutes) or a newer "
            "one replaced it. Open the monitor's link again."
        )
    return row


async def start_sign_in(
    db: Database, *, secrets: SecretBox, identity: IdentityPlatform, public_url: str, link: str
) -> str:
    """The identity platform's sign-in URL for the monitor the start link names."""
    monitor_id, _, token = link.partition(".")

    def work(tx: Transaction) -> str:
        row = tx.conn.execute(
            select(PRESENCE_MONITORS).where(PRESENCE_MONITORS.c.id == monitor_id)
        ).one_or_none()
        kept = MonitorSecrets.opened(secrets, row.secret) if row is not None else MonitorSecrets()
        if (
            row is None
            or not token
            or not kept.start
            or not token_matches(token, kept.start)
            or kept.start_expires < time.time()
        ):
            raise SignInLinkInvalid(
                "This monitor link is unknown or expired (links last a week); ask the CloudLink "
                "administrator for a new one (`cloudlink-gateway monitor renew`)."
            )
        config = teams_config(tx.conn, secrets, row.account_id)
        if config is None:
            raise Conflict("The account's Microsoft Teams integration is not configured.")
        verifier, challenge = pkce_pair()
        nonce = token_urlsafe(24)
        change_secrets(tx, secrets, row.id, verifier=verifier)
        tx.conn.execute(
            update(PRESENCE_MONITORS)
            .where(PRESENCE_MONITORS.c.id == row.id)
            .values(auth_state=token_digest(nonce), auth_expires_at=time.time() + SIGN_IN_SECONDS)
        )
        return identity.authorize_url(
            config.credentials,
            redirect_uri=public_url + CALLBACK_PATH,
            state=f"{row.id}.{nonce}",
            code_challenge=challenge,
            login_hint=row.upn,
        )

    return await db.transact(work)


async def finish_sign_in(
    db: Database,
    *,
    secrets: SecretBox,
    identity: IdentityPlatform,
    public_url: str,
    state: str,
    code: str | None,
    error: str | None,
) -> MonitorOut:
    """Redeem the code of a monitor's sign-in; the monitor is then Authorized.

    The steps: find the pending sign-in ``state`` names, redeem the code with its PKCE
    verifier, check who signed in, then store the refresh token and authorize (in one
    transaction, which finds the sign-in still pending).
    """
    monitor_id, _, nonce = state.partition(".")

    def pending(conn: Connection) -> tuple[MonitorRow, MonitorSecrets, TeamsConfig]:
        row = _pending(conn, monitor_id, nonce)
        config = teams_config(conn, secrets, row.account_id)
        if config is None:
            raise Conflict("The account's Microsoft Teams integration is not configured.")
        return row, MonitorSecrets.opened(secrets, row.secret), config

    row, kept, config = await db.query(pending)
    if error or not code or not kept.verifier:
        await _failed(db, row.id, f"Sign-in refused: {(error or 'no code')[:200]}")
        raise BadRequest(
            f"The sign-in did not complete ({error or 'no code'}); try the link again."
        )
    tokens = await _redeem(
        db,
        identity,
        config=config,
        monitor_id=row.id,
        code=code,
        redirect_uri=public_url + CALLBACK_PATH,
        verifier=kept.verifier,
    )
    refresh_token = await _signed_in_as_the_monitor(db, row, tokens)
    return await db.transact(
        lambda tx: _authorize(
            tx,
            secrets,
            monitor_id=monitor_id,
            nonce=nonce,
            config=config,
            refresh_token=refresh_token,
        )
    )


async def _redeem(
    db: Database,
    identity: IdentityPlatform,
    *,
    config: TeamsConfig,
    monitor_id: str,
    code: str,
    redirect_uri: str,
    verifier: str,
) -> UserTokens:
    """The tokens of the sign-in: a refusal is the monitor's error (400), a platform out of
    reach a 503 to try again."""
    try:
        return await identity.redeem_code(
            config.credentials, code=code, redirect_uri=redirect_uri, code_verifier=verifier
        )
    except IdentityError as exc:
        await _failed(db, monitor_id, str(exc)[:1000])
        raise BadRequest(f"The identity platform refused the sign-in: {exc}") from exc
    except ProviderError as exc:
        raise UpstreamUnavailable(f"The identity platform could not be reached: {exc}") from exc


async def _signed_in_as_the_monitor(db: Database, row: MonitorRow, tokens: UserTokens) -> str:
    """The refresh token, once the account that signed in is the monitor's own."""
    if not tokens.upn or fold(tokens.upn) != row.upn:
        await _failed(db, row.id, f"Signed in as {tokens.upn!r}, not {row.upn!r}")
        raise BadRequest(
            f"Signed in as {tokens.upn!r}, but this link is for the monitor {row.upn!r}: sign "
            "in with that account."
        )
    if not tokens.refresh_token:
        raise BadRequest("The sign-in gave no refresh token (offline_access not granted).")
    return tokens.refresh_token


def _authorize(
    tx: Transaction,
    secrets: SecretBox,
    *,
    monitor_id: str,
    nonce: str,
    config: TeamsConfig,
    refresh_token: str,
) -> MonitorOut:
    """Keep the refresh token and mark the monitor Authorized; its directory run and
    upkeep follow at once."""
    current = _pending(tx.conn, monitor_id, nonce)
    change_secrets(tx, secrets, current.id, verifier=None, refresh_token=refresh_token)
    tx.conn.execute(
        update(PRESENCE_MONITORS)
        .where(PRESENCE_MONITORS.c.id == current.id)
        .values(
            status=AUTHORIZED,
            tenant_id=config.credentials.tenant_id,
            client_id=config.credentials.client_id,
            auth_state=None,
            auth_expires_at=None,
            last_error=None,
            resync_needed=True,
            updated_at=utcnow(),
        )
    )
    tx.enqueue_once(account_id=current.account_id, kind=DIRECTORY, target_id=current.account_id)
    tx.enqueue_once(account_id=current.account_id, kind=UPKEEP, target_id=current.id)
    monitor_event(
        tx,
        account_id=current.account_id,
        actor=MONITOR_ACTOR,
        action="Edit",
        asset="Presence monitor",
        asset_id=current.id,
        type="presence.monitor_authorized",
        properties_changed=["status"],
        details={"monitor_id": current.id, "upn": current.upn, "status": AUTHORIZED},
    )
    return monitor_out(find_monitor(tx.conn, current.account_id, current.id))


async def _failed(db: Database, monitor_id: str, message: str) -> None:
    await db.transact(lambda tx: set_monitor(tx, monitor_id, last_error=message))
