"""Verify configuration: the console's system check, and "sync all".

Each item of the system check says what was checked, whether it holds, and what to do
when it does not: the app token (the tenant, client id and secret work), the app's
permissions (read from the token's roles), the client secret's expiry, the monitors
(enough authorized for the users), their subscriptions (live, no error), and whether the
notification URL answers Graph's validation request through ``GATEWAY_PUBLIC_URL`` (the
gateway calls itself from outside, as Graph does).

"Sync all" queues a read-back of every live monitor's users (``presence.sync`` rows, one
per monitor, run side by side); its reads go through the tenant's presence budget like
any other. Its progress is the monitors whose row has not finished; a row that gave up
after its retries counts as failed until the next sync all replaces it.
"""

from __future__ import annotations

import math
import time
from datetime import date
from secrets import token_urlsafe
from typing import Any

from sqlalchemy import Connection, func, select

from gateway.accounts.service import require_account
from gateway.clients.http import HttpClient, ProviderError, request
from gateway.clients.identity import IdentityError, IdentityPlatform, unverified_claims
from gateway.presence.models import CheckItem, SyncStatus, SystemCheck
from gateway.presence.monitors import LIVE, MONITOR_USERS, SUBSCRIBED, SYNC
from gateway.presence.teams import TeamsConfig, teams_config
from gateway.security import SecretBox
from gateway.web.errors import Conflict
from storage import outbox
from storage.engine import Database
from storage.outbox import DEAD, PENDING
from storage.tables import OUTBOX, PRESENCE_MONITORS, PRESENCE_USERS
from storage.transaction import Transaction

SECRET_WARNING_DAYS = 30
TO_TEAMS_ROLES = ("Presence.ReadWrite.All",)
FROM_TEAMS_ROLES = ("User.Read.All",)


def _roles(token: str) -> set[str]:
    """The roles of an app token (read, not verified: it came from the token endpoint)."""
    roles = unverified_claims(token).get("roles")
    return {str(role) for role in roles} if isinstance(roles, list) else set()


def _secret_item(config: TeamsConfig) -> CheckItem:
    expires = config.secret_expires
    if expires is None:
        return CheckItem(
            name="secret_expiry",
            status="warning",
            detail="The client secret's expiry is not recorded.",
            action="Set it (`integration set-teams ... --secret-expires YYYY-MM-DD`) to be "
            "warned before the secret stops working.",
        )
    days = (expires - date.today()).days
    if days < 0:
        return CheckItem(
            name="secret_expiry",
            status="error",
            detail=f"The client secret expired on {expires.isoformat()}.",
            action="Create a new client secret in Azure (Certificates & secrets) and save it "
            "with `integration set-teams`.",
        )
    if days < SECRET_WARNING_DAYS:
        return CheckItem(
            name="secret_expiry",
            status="warning",
            detail=f"The client secret expires in {days} day(s), on {expires.isoformat()}.",
            action="Create a new client secret in Azure and save it before then.",
        )
    return CheckItem(
        name="secret_expiry", status="ok", detail=f"Valid until {expires.isoformat()}."
    )


def _monitor_items(conn: Connection, account_id: str) -> list[CheckItem]:
    rows = conn.execute(
        select(PRESENCE_MONITORS).where(PRESENCE_MONITORS.c.account_id == account_id)
    ).all()
    users = conn.execute(
        select(func.count()).where(
            PRESENCE_USERS.c.account_id == account_id,
            PRESENCE_USERS.c.teams_user_id.is_not(None),
        )
    ).scalar_one()
    needed = math.ceil(users / MONITOR_USERS)
    live = [row for row in rows if row.status in LIVE]
    monitors = CheckItem(
        name="monitors",
        status="ok" if len(live) >= needed else "error",
        detail=f"{len(live)} of {len(rows)} monitor(s) authorized; {users} user(s) need {needed}.",
        action=None
        if len(live) >= needed
        else "Add monitors (`monitor add`) and sign them in, or renew the ones not "
        "authorized (`monitor renew`).",
    )
    now = time.time()
    broken = [
        row
        for row in live
        if row.users
        and (
            row.status != SUBSCRIBED
            or float(row.subscription_expires_at or 0) < now
            or row.last_error
        )
    ]
    subscriptions = CheckItem(
        name="subscriptions",
        status="ok" if not broken else "error",
        detail="Every authorized monitor with users has a live subscription."
        if not broken
        else "; ".join(f"{row.upn}: {row.last_error or 'no live subscription'}" for row in broken)[
            :1000
        ],
        action=None if not broken else "Check the notification URL item; sync all retries.",
    )
    return [monitors, subscriptions]


async def _token_items(identity: IdentityPlatform, config: TeamsConfig) -> list[CheckItem]:
    try:
        token = await identity.app_token(config.credentials, fresh=True)
    except IdentityError as exc:
        return [
            CheckItem(
                name="token",
                status="error",
                detail=str(exc)[:500],
                action="Check the tenant id, client id and secret of the Teams integration.",
            )
        ]
    except ProviderError as exc:
        return [CheckItem(name="token", status="error", detail=str(exc)[:500], action="Retry.")]
    roles = _roles(token.token)
    wanted = [*FROM_TEAMS_ROLES, *(TO_TEAMS_ROLES if config.presence_to_teams else ())]
    missing = [role for role in wanted if role not in roles]
    return [
        CheckItem(name="token", status="ok", detail="The app gets a token for Graph."),
        CheckItem(
            name="permissions",
            status="ok" if not missing else "error",
            detail="Granted: " + (", ".join(sorted(roles)) or "none"),
            action=None
            if not missing
            else f"Add the application permission(s) {', '.join(missing)} and grant admin "
            "consent in Azure (API permissions).",
        ),
    ]


async def _url_item(http: HttpClient, public_url: str) -> CheckItem:
    probe = token_urlsafe(12)
    url = public_url + "/webhooks/graph/notifications"
    try:
        reply = await request(
            http, "POST", url, what="notification URL", params={"validationToken": probe}
        )
    except ProviderError as exc:
        reply = None
        detail = str(exc)
    if reply is not None and reply.status == 200 and reply.body.decode(errors="replace") == probe:
        return CheckItem(name="notification_url", status="ok", detail=f"{url} answers.")
    if reply is not None:
        detail = f"{url} answered {reply.status}"
    return CheckItem(
        name="notification_url",
        status="error",
        detail=detail[:500],
        action="GATEWAY_PUBLIC_URL must be the https URL Graph reaches this gateway at.",
    )


async def system_check(
    db: Database,
    *,
    secrets: SecretBox,
    identity: IdentityPlatform,
    http: HttpClient,
    public_url: str,
    account_id: str,
) -> SystemCheck:
    """Every item of the system check, each with its status and what to do."""

    def read(conn: Connection) -> tuple[TeamsConfig | None, list[CheckItem]]:
        require_account(conn, account_id)
        return teams_config(conn, secrets, account_id), _monitor_items(conn, account_id)

    config, monitor_items = await db.query(read)
    if config is None:
        raise Conflict("The account has no Microsoft Teams integration to check.")
    items = [
        *await _token_items(identity, config),
        _secret_item(config),
        *(monitor_items if config.presence_from_teams else []),
        await _url_item(http, public_url),
    ]
    worst = (
        "error"
        if any(i.status == "error" for i in items)
        else ("warning" if any(i.status == "warning" for i in items) else "ok")
    )
    return SystemCheck(status=worst, items=items)


async def sync_all(db: Database, *, account_id: str) -> SyncStatus:
    """Every live monitor reads back all its users' presence, starting now."""

    def work(tx: Transaction) -> SyncStatus:
        require_account(tx.conn, account_id)
        rows = tx.conn.execute(
            select(PRESENCE_MONITORS.c.id).where(
                PRESENCE_MONITORS.c.account_id == account_id,
                PRESENCE_MONITORS.c.status.in_(LIVE),
            )
        ).all()
        if not rows:
            raise Conflict("No authorized presence monitor: nothing to sync.")
        # Read-backs an earlier sync gave up on are replaced by this one.
        outbox.forget_dead(tx.conn, account_id=account_id, kind=SYNC)
        for row in rows:
            tx.enqueue_once(account_id=account_id, kind=SYNC, target_id=row.id)
        return _sync_status(tx.conn, account_id)

    return await db.transact(work)


def _sync_status(conn: Connection, account_id: str) -> SyncStatus:
    rows = conn.execute(
        select(PRESENCE_MONITORS.c.id, PRESENCE_MONITORS.c.users).where(
            PRESENCE_MONITORS.c.account_id == account_id,
            PRESENCE_MONITORS.c.status.in_(LIVE),
        )
    ).all()
    # Waiting or being read (a row stays until its read is stored), or given up.
    states = conn.execute(
        select(OUTBOX.c.target_id, OUTBOX.c.status).where(
            OUTBOX.c.account_id == account_id, OUTBOX.c.kind == SYNC
        )
    ).all()
    waiting = {row.target_id for row in states if row.status == PENDING}
    failed = {row.target_id for row in states if row.status == DEAD} - waiting
    pending: Any = [row for row in rows if row.id in waiting]
    return SyncStatus(
        monitors=len(rows),
        monitors_pending=len(pending),
        users=sum(row.users for row in rows),
        users_pending=sum(row.users for row in pending),
        done=not pending,
        monitors_failed=sum(1 for row in rows if row.id in failed),
    )


async def sync_status(db: Database, *, account_id: str) -> SyncStatus:
    """How far "sync all" has come."""

    def read(conn: Connection) -> SyncStatus:
        require_account(conn, account_id)
        return _sync_status(conn, account_id)

    return await db.query(read)
