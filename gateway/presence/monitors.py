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
import time
import uuid
from dataclasses import dataclass
from secrets import token_urlsafe
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)

from gateway.accounts.models import IntegrationOut, TeamsSettings
from gateway.accounts.service import require_account
from gateway.clients.identity import IdentityPlatform
from gateway.events.service import Actor, record_event
from gateway.folding import fold
from gateway.presence.models import MonitorList, MonitorOut
from gateway.presence.service import PRESENCE_CATEGORY
from gateway.presence.teams import configure_teams, teams_config
from gateway.security import SecretBox, token_digest
from gateway.web.errors import Conflict, InvalidValue, NotFound
from storage.engine import Database
from storage.one_statement import enqueue_once_ctes
from storage.prepared import Prepared
from storage.rows import MonitorRow
from storage.tables import PRESENCE_MONITORS, PRESENCE_USERS, utcnow
from storage.transaction import Transaction
from storage.upsert import insert_if_absent

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

monitor_event = functools.partial(record_event, category=PRESENCE_CATEGORY)


def users_changed(tx: Transaction, account_id: str) -> None:
    """A provisioned user was added, changed or removed: when the account watches Teams
    presence, its directory job runs shortly, finding new users in Teams and releasing
    the ones no longer provisioned."""
    if _HAS_MONITOR.run(tx.conn, {"account_id": account_id}).fetchone() is not None:
        tx.enqueue_once(
            account_id=account_id, kind=DIRECTORY, target_id=account_id, delay=DIRECTORY_SETTLE
        )


def directory_ctes(account_id: ColumnElement[str]) -> list[CTE]:
    """``users_changed`` as CTEs of a one-statement write (``storage.one_statement``): the
    account's directory job made due within ``DIRECTORY_SETTLE``, if the account has a
    monitor. Parameters: ``directory_params``."""
    has_monitor = exists(
        select(PRESENCE_MONITORS.c.id).where(PRESENCE_MONITORS.c.account_id == account_id)
    )
    return enqueue_once_ctes(
        "directory", account_id=account_id, kind=DIRECTORY, target_id=account_id, when=has_monitor
    )


def directory_params() -> dict[str, float]:
    """The parameters of ``directory_ctes``."""
    return {"directory_at": time.time() + DIRECTORY_SETTLE}


def needs_resync(tx: Transaction, account_id: str, monitor_id: str) -> None:
    """Graph said the monitor's subscription needs care (reauthorization, removal, missed
    notifications): its upkeep runs now and reads its users back."""
    tx.conn.execute(
        update(PRESENCE_MONITORS)
        .where(PRESENCE_MONITORS.c.id == monitor_id)
        .values(resync_needed=True)
    )
    tx.enqueue_once(account_id=account_id, kind=UPKEEP, target_id=monitor_id)


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


def monitor_out(row: MonitorRow, authorize_url: str | None = None) -> MonitorOut:
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


def find_monitor(conn: Connection, account_id: str, monitor_id: str) -> MonitorRow:
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
    token = token_urlsafe(24)
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
        added = insert_if_absent(
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
        monitor_event(
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
        monitor_event(
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


async def save_teams(
    db: Database,
    *,
    secrets: SecretBox,
    identity: IdentityPlatform,
    account_id: str,
    body: TeamsSettings,
    actor: Actor,
    public_url: str,
) -> IntegrationOut:
    """Save the Teams settings (the app checked first); saved settings may turn Teams →
    CloudLink back on, so its jobs start again."""
    item = await configure_teams(
        db,
        secrets=secrets,
        identity=identity,
        account_id=account_id,
        body=body,
        actor=actor,
        public_url=public_url,
    )
    await resume(db, secrets=secrets, account_id=account_id)
    return item
