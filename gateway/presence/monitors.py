"""Presence monitors: Teams accounts whose delegated token holds a presence subscription.

Graph takes presence subscriptions with delegated permissions only, at most 650 users
each, so an account watches its users through monitors, user accounts created for it in
Azure. A monitor is added by UPN and signed in through the authorization code flow with
PKCE: ``authorize_url`` is a link of the gateway (valid a week, for the CloudLink admin or
the Azure admin it is sent to) that starts a fresh sign-in at each visit, with the UPN as
login hint; the identity platform sends the browser back to ``/oauth/monitor``, where the
code is redeemed. The signed-in account must be the monitor's UPN. Refresh tokens are
encrypted and replaced at every refresh.

Statuses: ``not_authorized`` (never signed in, or its grant is gone), ``authorized``
(signed in, no subscription yet), ``subscribed`` (a live subscription for its users),
``needs_update`` (the Teams app's tenant or client id changed: sign in again).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import secrets as random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from gateway.accounts.service import require_account
from gateway.clients.identity import IdentityError, IdentityPlatform, pkce_pair
from gateway.events.service import Actor, record_event
from gateway.folding import fold
from gateway.presence.models import MonitorList, MonitorOut
from gateway.presence.teams import teams_config
from gateway.security import SecretBox, token_digest, token_matches
from gateway.web.errors import BadRequest, Conflict, InvalidValue, NotFound, UpstreamUnavailable
from storage.engine import Database
from storage.prepared import Prepared
from storage.tables import PRESENCE_MONITORS, PRESENCE_USERS, utcnow
from storage.transaction import Transaction
from storage.upsert import remember

MONITOR_USERS = 650
MAX_UPN = 320
START_PATH = "/oauth/monitor/start"
CALLBACK_PATH = "/oauth/monitor"
START_SECONDS = 7 * 86400.0
SIGN_IN_SECONDS = 900.0
NOT_AUTHORIZED = "not_authorized"
AUTHORIZED = "authorized"
SUBSCRIBED = "subscribed"
LIVE = (AUTHORIZED, SUBSCRIBED)
UPKEEP = "presence.upkeep"
DIRECTORY = "presence.directory"
# "Sync all": one row per live monitor, reading back its users.
SYNC = "presence.sync"
UNSUBSCRIBE = "presence.unsubscribe"
MONITOR_ACTOR = Actor("Presence monitor", "sign-in")
# A provisioning burst (Entra sends users one by one) settles into one directory run,
# so that subscriptions are not replaced at every user.
DIRECTORY_SETTLE = 15.0

_HAS_MONITOR = Prepared(
    select(PRESENCE_MONITORS.c.id)
    .where(PRESENCE_MONITORS.c.account_id == bindparam("account_id"))
    .limit(1)
)

_event = functools.partial(record_event, event_type="Presence")


def users_changed(tx: Transaction, account_id: str) -> None:
    """A provisioned user was added, changed or removed: when the account watches Teams
    presence, its directory job runs shortly, finding new users in Teams and releasing
    the ones no longer provisioned."""
    if _HAS_MONITOR.run(tx.conn, {"account_id": account_id}).fetchone() is not None:
        tx.enqueue_once(
            account_id=account_id, kind=DIRECTORY, target_id=account_id, delay=DIRECTORY_SETTLE
        )


class SignInLinkInvalid(BadRequest):
    """A sign-in link or answer that belongs to no pending sign-in."""

    code = "sign_in_link_invalid"


@dataclass(frozen=True)
class MonitorSecrets:
    """What a monitor keeps encrypted: its start link, PKCE verifier, refresh token."""

    start: str | None = None
    start_expires: float = 0.0
    verifier: str | None = None
    refresh_token: str | None = None

    def sealed(self, box: SecretBox) -> str:
        """Encrypted for the ``secret`` column."""
        return box.encrypt(json.dumps(self.__dict__))

    @classmethod
    def opened(cls, box: SecretBox, sealed: str | None) -> MonitorSecrets:
        """Decrypted from the ``secret`` column."""
        return cls(**json.loads(box.decrypt(sealed))) if sealed else cls()


def monitor_out(row: Any, authorize_url: str | None = None) -> MonitorOut:
    """A monitor as the API shows it (never its tokens)."""
    return MonitorOut(
        id=row.id,
        upn=row.upn,
        status=row.status,
        users=row.users,
        subscription_expires_at=row.subscription_expires_at,
        last_error=row.last_error,
        authorize_url=authorize_url,
    )


def find_monitor(conn: Connection, account_id: str, monitor_id: str) -> Any:
    """The account's monitor, or 404."""
    row = conn.execute(
        select(PRESENCE_MONITORS).where(
            PRESENCE_MONITORS.c.account_id == account_id, PRESENCE_MONITORS.c.id == monitor_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No presence monitor {monitor_id!r} in this account.")
    return row


def _start_link(public_url: str, row_id: str) -> tuple[str, dict[str, Any]]:
    """A new week-long start link, and the secrets fields that recognise it."""
    token = random.token_urlsafe(24)
    fields = {"start": token_digest(token), "start_expires": time.time() + START_SECONDS}
    return f"{public_url}{START_PATH}?m={row_id}.{token}", fields


def change_secrets(tx: Transaction, box: SecretBox, monitor_id: str, **fields: Any) -> None:
    """Change some of a monitor's secrets, reading the others in this transaction (locked
    on PostgreSQL), so that a sign-in, a renewal and an upkeep never undo each other's."""
    query = select(PRESENCE_MONITORS.c.secret).where(PRESENCE_MONITORS.c.id == monitor_id)
    if tx.conn.dialect.name == "postgresql":
        query = query.with_for_update()
    current = MonitorSecrets.opened(box, tx.conn.execute(query).scalar_one_or_none())
    tx.conn.execute(
        update(PRESENCE_MONITORS)
        .where(PRESENCE_MONITORS.c.id == monitor_id)
        .values(secret=dataclasses.replace(current, **fields).sealed(box), updated_at=utcnow())
    )


async def add_monitor(
    db: Database, *, secrets: SecretBox, public_url: str, account_id: str, upn: str, actor: Actor
) -> MonitorOut:
    """Add a monitor by UPN; the answer's ``authorize_url`` signs it in."""

    if len(fold(upn)) > MAX_UPN:
        raise InvalidValue(f"upn must be at most {MAX_UPN} characters once normalised.")

    def work(tx: Transaction) -> MonitorOut:
        require_account(tx.conn, account_id)
        if teams_config(tx.conn, secrets, account_id) is None:
            raise Conflict(
                "Configure the account's Microsoft Teams integration first "
                "(`cloudlink-gateway integration set-teams`): monitors sign in to its app."
            )
        monitor_id = str(uuid.uuid4())
        url, fields = _start_link(public_url, monitor_id)
        sealed = MonitorSecrets(**fields).sealed(secrets)
        now = utcnow()
        added = remember(
            tx.conn,
            PRESENCE_MONITORS,
            {
                "id": monitor_id,
                "account_id": account_id,
                "upn": fold(upn),
                "status": NOT_AUTHORIZED,
                "secret": sealed,
                "users": 0,
                "resync_needed": False,
                "created_at": now,
                "updated_at": now,
            },
        )
        if not added:
            raise Conflict(f"The account has a presence monitor for {upn!r} already.")
        _event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Create",
            asset="Presence monitor",
            asset_id=monitor_id,
            type="presence.monitor_added",
            properties_changed=["upn"],
            details={"monitor_id": monitor_id, "upn": fold(upn)},
        )
        return monitor_out(find_monitor(tx.conn, account_id, monitor_id), url)

    return await db.transact(work)


async def renew_monitor(
    db: Database, *, secrets: SecretBox, public_url: str, account_id: str, monitor_id: str
) -> MonitorOut:
    """A new sign-in link (Retry, Renew, Copy URL); the monitor keeps working meanwhile."""

    def work(tx: Transaction) -> MonitorOut:
        row = find_monitor(tx.conn, account_id, monitor_id)
        url, fields = _start_link(public_url, row.id)
        change_secrets(tx, secrets, row.id, **fields)
        return monitor_out(find_monitor(tx.conn, account_id, monitor_id), url)

    return await db.transact(work)


async def delete_monitor(db: Database, *, account_id: str, monitor_id: str, actor: Actor) -> None:
    """Remove a monitor; its users move to the other monitors, its subscription is deleted."""

    def work(tx: Transaction) -> None:
        row = find_monitor(tx.conn, account_id, monitor_id)
        if row.subscription_id and row.secret:
            tx.enqueue(
                account_id=account_id,
                kind=UNSUBSCRIBE,
                target_id=row.id,
                payload={"subscription_id": row.subscription_id, "secret": row.secret},
            )
        tx.conn.execute(
            update(PRESENCE_USERS)
            .where(PRESENCE_USERS.c.monitor_id == row.id)
            .values(monitor_id=None)
        )
        tx.conn.execute(delete(PRESENCE_MONITORS).where(PRESENCE_MONITORS.c.id == row.id))
        tx.enqueue_once(account_id=account_id, kind=DIRECTORY, target_id=account_id)
        _event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Delete",
            asset="Presence monitor",
            asset_id=row.id,
            type="presence.monitor_removed",
            properties_changed=["upn"],
            details={"monitor_id": row.id, "upn": row.upn},
        )

    await db.transact(work)


async def list_monitors(db: Database, *, account_id: str) -> MonitorList:
    """The monitors, and whether enough are authorized for the users that can be watched."""

    def read(conn: Connection) -> MonitorList:
        require_account(conn, account_id)
        rows = conn.execute(
            select(PRESENCE_MONITORS)
            .where(PRESENCE_MONITORS.c.account_id == account_id)
            .order_by(PRESENCE_MONITORS.c.created_at)
        ).all()
        users = conn.execute(
            select(func.count()).where(
                PRESENCE_USERS.c.account_id == account_id,
                PRESENCE_USERS.c.teams_user_id.is_not(None),
            )
        ).scalar_one()
        needed = math.ceil(users / MONITOR_USERS)
        authorized = sum(1 for row in rows if row.status in LIVE)
        watched = sum(row.users for row in rows if row.status == SUBSCRIBED)
        warning = None
        if authorized < needed:
            warning = (
                f"{users} user(s) can be monitored, which needs {needed} authorized monitor(s) "
                f"of {MONITOR_USERS} users each; {authorized} are authorized. Add and authorize "
                "more monitors, or the presence of the users beyond them is not watched."
            )
        return MonitorList(
            items=[monitor_out(row) for row in rows],
            users_monitorable=users,
            users_watched=watched,
            monitors_needed=needed,
            monitors_authorized=authorized,
            warning=warning,
        )

    return await db.query(read)


def _pending(conn: Connection, monitor_id: str, nonce: str) -> Any:
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
        nonce = random.token_urlsafe(24)
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
    """Redeem the code of a monitor's sign-in; the monitor is then Authorized."""
    monitor_id, _, nonce = state.partition(".")

    def pending(conn: Connection) -> tuple[Any, MonitorSecrets, Any]:
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
    try:
        tokens = await identity.redeem_code(
            config.credentials,
            code=code,
            redirect_uri=public_url + CALLBACK_PATH,
            code_verifier=kept.verifier,
        )
    except IdentityError as exc:
        await _failed(db, row.id, str(exc)[:1000])
        raise BadRequest(f"The identity platform refused the sign-in: {exc}") from exc
    except Exception as exc:
        raise UpstreamUnavailable(f"The identity platform could not be reached: {exc}") from exc
    if not tokens.upn or fold(tokens.upn) != row.upn:
        await _failed(db, row.id, f"Signed in as {tokens.upn!r}, not {row.upn!r}")
        raise BadRequest(
            f"Signed in as {tokens.upn!r}, but this link is for the monitor {row.upn!r}: sign "
            "in with that account."
        )
    if not tokens.refresh_token:
        raise BadRequest("The sign-in gave no refresh token (offline_access not granted).")

    def work(tx: Transaction) -> MonitorOut:
        current = _pending(tx.conn, monitor_id, nonce)
        change_secrets(tx, secrets, current.id, verifier=None, refresh_token=tokens.refresh_token)
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
        _event(
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

    return await db.transact(work)


def monitor_users(conn: Connection, monitor_id: str) -> list[str]:
    """The Teams ids of the users the monitor watches, in order."""
    return list(
        conn.scalars(
            select(PRESENCE_USERS.c.teams_user_id)
            .where(
                PRESENCE_USERS.c.monitor_id == monitor_id,
                PRESENCE_USERS.c.teams_user_id.is_not(None),
            )
            .order_by(PRESENCE_USERS.c.teams_user_id)
        )
    )


def set_monitor(tx: Transaction, monitor_id: str, **values: Any) -> None:
    """Change columns of a monitor (and its ``updated_at``)."""
    tx.conn.execute(
        update(PRESENCE_MONITORS)
        .where(PRESENCE_MONITORS.c.id == monitor_id)
        .values(updated_at=utcnow(), **values)
    )


async def _failed(db: Database, monitor_id: str, message: str) -> None:
    await db.transact(lambda tx: set_monitor(tx, monitor_id, last_error=message))


async def resume(db: Database, *, secrets: SecretBox, account_id: str) -> None:
    """Start the account's presence jobs again (after its Teams settings were saved)."""

    def work(tx: Transaction) -> None:
        config = teams_config(tx.conn, secrets, account_id)
        if config is None or not config.presence_from_teams:
            return
        tx.enqueue_once(account_id=account_id, kind=DIRECTORY, target_id=account_id)
        rows = tx.conn.execute(
            select(PRESENCE_MONITORS.c.id).where(
                PRESENCE_MONITORS.c.account_id == account_id,
                PRESENCE_MONITORS.c.status.in_(LIVE),
            )
        )
        for row in rows:
            tx.enqueue_once(account_id=account_id, kind=UPKEEP, target_id=row.id)

    await db.transact(work)
