"""Subscription upkeep as outbox jobs: the directory of an account, each monitor's upkeep.

Jobs are outbox rows like any other side effect: claimed with a lease, so several
gateway processes never work on one at once, retried on failure, and each run leaves its
next run behind (``queue_once``), so they go on after a restart.

- ``presence.directory`` (per account, every 10 minutes and when monitors change): finds
  the provisioned users in Teams (by email / UPN, once, in ``$batch`` lookups), spreads
  them over the authorized monitors, at most 650 each, keeping users where they are, and
  makes the upkeep of every monitor whose users changed due now.
- ``presence.upkeep`` (per monitor): refreshes the monitor's tokens (the new refresh token
  replaces the old; ``invalid_grant`` and kin make it ``not_authorized``), then creates,
  renews or replaces its subscription with the monitor's delegated token, and reads back
  the presence of its users after any gap (a new subscription, a lifecycle event). It runs
  again at half the lifetime Graph granted, and at least every two minutes, so a dropped
  subscription or a revoked monitor is noticed within minutes.
- ``presence.unsubscribe``: deletes the subscription of a removed monitor.
"""

from __future__ import annotations

import hashlib
import secrets as random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, select, update

from gateway.accounts.teams import NEEDS_UPDATE, TeamsConfig, teams_config
from gateway.clients.graph import (
    MAX_BATCH,
    MAX_PRESENCE_IDS,
    BatchRequest,
    BatchResponse,
    GraphApi,
)
from gateway.clients.identity import IdentityError, IdentityPlatform
from gateway.delivery.graph_batching import Budgets, with_app_token
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.presence_reads import apply_presence
from gateway.delivery.worker import Dropped, Handler, Settle
from gateway.presence.monitors import (
    AUTHORIZED,
    DIRECTORY,
    LIVE,
    MONITOR_USERS,
    NOT_AUTHORIZED,
    SUBSCRIBED,
    UPKEEP,
    MonitorSecrets,
)
from gateway.presence.service import presence_user, queue_once
from gateway.security import SecretBox, token_digest
from storage.engine import Database
from storage.outbox import Claimed
from storage.tables import PRESENCE_MONITORS, PRESENCE_USERS, SCIM_CLAIMS, SCIM_USERS, utcnow
from storage.transaction import Transaction

DIRECTORY_EVERY = 600.0
LOOKUP_AGAIN = 3600.0
UPKEEP_AT_MOST = 120.0
UPKEEP_AT_LEAST = 10.0
SUBSCRIPTION_MINUTES = 60


# -- directory ------------------------------------------------------------------------


def _provisioned_emails(conn: Connection, account_id: str) -> list[str]:
    rows = conn.execute(
        select(SCIM_CLAIMS.c.value_key)
        .join(SCIM_USERS, SCIM_USERS.c.pk == SCIM_CLAIMS.c.user_pk)
        .where(
            SCIM_CLAIMS.c.account_id == account_id,
            SCIM_CLAIMS.c.kind == "email",
            SCIM_USERS.c.active.is_(True),
        )
        .order_by(SCIM_CLAIMS.c.value_key)
    )
    return [row.value_key for row in rows]


def _directory_plan(
    conn: Connection, secrets: SecretBox, account_id: str
) -> tuple[TeamsConfig, list[str]]:
    config = teams_config(conn, secrets, account_id)
    if config is None or not config.presence_from_teams:
        raise Dropped("the account does not carry Teams presence")
    emails = _provisioned_emails(conn, account_id)
    known = {
        row.email: row
        for row in conn.execute(
            select(PRESENCE_USERS).where(PRESENCE_USERS.c.account_id == account_id)
        )
    }
    moment = time.time()
    unknown = [
        email
        for email in emails
        if email not in known
        or (
            known[email].teams_user_id is None
            and moment - float(known[email].looked_up_at or 0) > LOOKUP_AGAIN
        )
    ]
    return config, unknown


async def _look_up(
    graph: GraphApi, identity: IdentityPlatform, config: TeamsConfig, emails: list[str]
) -> dict[str, str | None]:
    """Each email's Teams user id (None: not in the directory), 20 lookups a ``$batch``."""
    found: dict[str, str | None] = {}
    for start in range(0, len(emails), MAX_BATCH):
        chunk = emails[start : start + MAX_BATCH]
        requests = [
            BatchRequest(
                str(i), "GET", f"/users/{quote(email, safe='@')}?$select=id,userPrincipalName"
            )
            for i, email in enumerate(chunk)
        ]

        async def call(token: str, batch: list[BatchRequest] = requests) -> list[BatchResponse]:
            return await graph.batch(token, batch)

        answers = await with_app_token(identity, config.credentials, call)
        for email, answer in zip(chunk, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict) and answer.body.get("id"):
                found[email] = str(answer.body["id"])
            elif answer.status == 404:
                found[email] = None
    return found


def rebalance(tx: Transaction, account_id: str) -> list[str]:
    """Spread the account's Teams users over its live monitors; the monitors that changed."""
    monitors = [
        row.id
        for row in tx.conn.execute(
            select(PRESENCE_MONITORS.c.id)
            .where(
                PRESENCE_MONITORS.c.account_id == account_id,
                PRESENCE_MONITORS.c.status.in_(LIVE),
            )
            .order_by(PRESENCE_MONITORS.c.created_at)
        )
    ]
    users = tx.conn.execute(
        select(PRESENCE_USERS.c.id, PRESENCE_USERS.c.monitor_id)
        .where(
            PRESENCE_USERS.c.account_id == account_id,
            PRESENCE_USERS.c.teams_user_id.is_not(None),
        )
        .order_by(PRESENCE_USERS.c.email)
    ).all()
    load: dict[str, list[str]] = {monitor: [] for monitor in monitors}
    waiting: list[str] = []
    for user in users:
        if user.monitor_id in load and len(load[user.monitor_id]) < MONITOR_USERS:
            load[user.monitor_id].append(user.id)
        else:
            waiting.append(user.id)
    for user_id in waiting:
        roomiest = min(monitors, key=lambda m: len(load[m]), default=None)
        if roomiest is None or len(load[roomiest]) >= MONITOR_USERS:
            break
        load[roomiest].append(user_id)
    before = {user.id: user.monitor_id for user in users}
    after = {user_id: monitor for monitor, ids in load.items() for user_id in ids}
    changed: set[str] = set()
    moves: dict[str | None, list[str]] = {}
    for user_id, old in before.items():
        new = after.get(user_id)
        if new != old:
            moves.setdefault(new, []).append(user_id)
            changed.update(m for m in (old, new) if m in load)
    for target, ids in moves.items():
        for start in range(0, len(ids), 500):
            tx.conn.execute(
                update(PRESENCE_USERS)
                .where(PRESENCE_USERS.c.id.in_(ids[start : start + 500]))
                .values(monitor_id=target)
            )
    for monitor, ids in load.items():
        tx.conn.execute(
            update(PRESENCE_MONITORS)
            .where(PRESENCE_MONITORS.c.id == monitor)
            .values(users=len(ids))
        )
    return sorted(changed)


def directory_handler(tools: GraphTools, policy: RetryPolicy) -> Handler:
    """Find the account's users in Teams and spread them over its monitors."""

    async def run(row: Claimed) -> Settle | None:
        config, unknown = await tools.db.query(_directory_plan, tools.secrets, row.target_id)
        found = await _look_up(tools.graph, tools.identity, config, unknown)
        moment = time.time()

        def settle(tx: Transaction) -> None:
            for email, teams_id in found.items():
                user = presence_user(tx, row.target_id, email)
                tx.conn.execute(
                    update(PRESENCE_USERS)
                    .where(PRESENCE_USERS.c.id == user.id)
                    .values(teams_user_id=teams_id, looked_up_at=moment, updated_at=utcnow())
                )
            for monitor_id in rebalance(tx, row.target_id):
                queue_once(tx, account_id=row.target_id, kind=UPKEEP, target_id=monitor_id)
            queue_once(
                tx,
                account_id=row.target_id,
                kind=DIRECTORY,
                target_id=row.target_id,
                delay=DIRECTORY_EVERY,
            )

        return settle

    def on_dead(tx: Transaction, row: Claimed, exc: Exception) -> None:
        queue_once(
            tx,
            account_id=row.account_id,
            kind=DIRECTORY,
            target_id=row.target_id,
            delay=DIRECTORY_EVERY,
        )

    return Handler(run=run, policy=policy, on_dead=on_dead)


# -- a monitor's upkeep ---------------------------------------------------------------


def _upkeep_plan(
    conn: Connection, secrets: SecretBox, monitor_id: str
) -> tuple[Any, TeamsConfig | None, MonitorSecrets, list[str]]:
    monitor = conn.execute(
        select(PRESENCE_MONITORS).where(PRESENCE_MONITORS.c.id == monitor_id)
    ).one_or_none()
    if monitor is None or monitor.status not in LIVE:
        raise Dropped("the monitor is gone or not authorized")
    users = [
        row.teams_user_id
        for row in conn.execute(
            select(PRESENCE_USERS.c.teams_user_id)
            .where(
                PRESENCE_USERS.c.monitor_id == monitor_id,
                PRESENCE_USERS.c.teams_user_id.is_not(None),
            )
            .order_by(PRESENCE_USERS.c.teams_user_id)
        )
    ]
    return (
        monitor,
        teams_config(conn, secrets, monitor.account_id),
        MonitorSecrets.opened(secrets, monitor.secret),
        users,
    )


def _set_monitor(tx: Transaction, monitor_id: str, **values: Any) -> None:
    tx.conn.execute(
        update(PRESENCE_MONITORS)
        .where(PRESENCE_MONITORS.c.id == monitor_id)
        .values(updated_at=utcnow(), **values)
    )


def _signed_out(monitor: Any, message: str) -> Settle:
    def settle(tx: Transaction) -> None:
        _set_monitor(
            tx,
            monitor.id,
            status=NOT_AUTHORIZED,
            last_error=message[:1000],
            subscription_id=None,
            subscription_expires_at=None,
            subscription_hash=None,
        )
        # Its users move to the monitors still authorized.
        queue_once(tx, account_id=monitor.account_id, kind=DIRECTORY, target_id=monitor.account_id)

    return settle


@dataclass(frozen=True)
class GraphTools:
    """What the subscription jobs use: the database, the key ring, the Microsoft clients."""

    db: Database
    secrets: SecretBox
    graph: GraphApi
    identity: IdentityPlatform
    public_url: str
    budgets: Budgets
    upkeep_every: float = UPKEEP_AT_MOST


def upkeep_handler(tools: GraphTools, policy: RetryPolicy) -> Handler:
    """Keep a monitor's subscription alive and its users' presence current."""
    upkeep = _Upkeep(tools)

    def on_dead(tx: Transaction, row: Claimed, exc: Exception) -> None:
        # Upkeep never stops: the failure is shown on the monitor and the job comes back.
        _set_monitor(tx, row.target_id, last_error=str(exc)[:1000])
        queue_once(
            tx,
            account_id=row.account_id,
            kind=UPKEEP,
            target_id=row.target_id,
            delay=UPKEEP_AT_MOST,
        )

    return Handler(run=upkeep.run, policy=policy, on_dead=on_dead)


@dataclass(frozen=True)
class _Upkeep:
    tools: GraphTools

    async def run(self, row: Claimed) -> Settle | None:
        db, secrets = self.tools.db, self.tools.secrets
        monitor, config, kept, users = await db.query(_upkeep_plan, secrets, row.target_id)
        if config is None or not config.presence_from_teams:
            raise Dropped("the account does not carry Teams presence")
        creds = config.credentials
        if (monitor.tenant_id, monitor.client_id) != (creds.tenant_id, creds.client_id):

            def needs_update(tx: Transaction) -> None:
                _set_monitor(tx, monitor.id, status=NEEDS_UPDATE)

            return needs_update
        if not kept.refresh_token:
            return _signed_out(monitor, "No refresh token: sign the monitor in again.")
        try:
            tokens = await self.tools.identity.refresh(creds, kept.refresh_token)
        except IdentityError as exc:
            if exc.signed_out or exc.bad_client:
                return _signed_out(monitor, str(exc))
            raise
        sealed = MonitorSecrets(
            start=kept.start,
            start_expires=kept.start_expires,
            refresh_token=tokens.refresh_token or kept.refresh_token,
        ).sealed(secrets)
        # The new refresh token first: the old one stops working once this one is issued.
        await db.transact(lambda tx: _set_monitor(tx, monitor.id, secret=sealed))
        return await self._subscribe(monitor, tokens.access.token, users, config)

    async def _subscription(
        self, monitor: Any, token: str, users: list[str], digest: str
    ) -> tuple[str | None, float | None]:
        """The subscription kept or renewed, or (None, None) when a new one is needed."""
        graph = self.tools.graph
        if monitor.subscription_id and monitor.subscription_hash == digest:
            wanted = datetime.now(UTC) + timedelta(minutes=SUBSCRIPTION_MINUTES)
            renewed = await graph.renew_subscription(token, monitor.subscription_id, wanted)
            if renewed is not None:
                return renewed.id, renewed.expires_at.timestamp()
        elif monitor.subscription_id:
            await graph.delete_subscription(token, monitor.subscription_id)
        return None, None

    async def _subscribe(
        self, monitor: Any, token: str, users: list[str], config: TeamsConfig
    ) -> Settle:
        graph = self.tools.graph
        digest = hashlib.sha256(",".join(users).encode()).hexdigest()
        resync = bool(monitor.resync_needed)
        client_state = monitor.client_state
        if not users:
            if monitor.subscription_id:
                await graph.delete_subscription(token, monitor.subscription_id)
            subscription_id, expires_at, resync = None, None, False
        else:
            subscription_id, expires_at = await self._subscription(monitor, token, users, digest)
        if users and subscription_id is None:
            secret = random.token_urlsafe(24)
            client_state = token_digest(secret)
            # Recorded before Graph is asked, so that the first notifications are recognised.
            await self.tools.db.transact(
                lambda tx: _set_monitor(tx, monitor.id, client_state=client_state)
            )
            created = await graph.create_subscription(
                token,
                user_ids=users,
                notification_url=self.tools.public_url + "/webhooks/graph/notifications",
                lifecycle_url=self.tools.public_url + "/webhooks/graph/lifecycle",
                expires_at=datetime.now(UTC) + timedelta(minutes=SUBSCRIPTION_MINUTES),
                client_state=f"{monitor.id}.{secret}",
            )
            subscription_id, expires_at = created.id, created.expires_at.timestamp()
            resync = True
        presences: list[dict[str, Any]] = []
        if resync and users:

            async def read(app_token: str) -> list[dict[str, Any]]:
                return await graph.presences(app_token, users)

            # A resync spends the tenant's presence budget like any other read.
            calls = -(-len(users) // MAX_PRESENCE_IDS)
            await self.tools.budgets.of(config.credentials).take(calls)
            presences = await with_app_token(self.tools.identity, config.credentials, read)
        lifetime = (expires_at - time.time()) if expires_at else UPKEEP_AT_MOST * 2
        longest = self.tools.upkeep_every
        delay = max(min(UPKEEP_AT_LEAST, longest), min(longest, lifetime / 2))

        def settle(tx: Transaction) -> None:
            _set_monitor(
                tx,
                monitor.id,
                status=SUBSCRIBED if subscription_id else AUTHORIZED,
                subscription_id=subscription_id,
                subscription_expires_at=expires_at,
                subscription_hash=digest if subscription_id else None,
                client_state=client_state,
                resync_needed=False,
                last_error=None,
            )
            for presence in presences:
                apply_presence(tx, monitor.account_id, presence)
            queue_once(
                tx, account_id=monitor.account_id, kind=UPKEEP, target_id=monitor.id, delay=delay
            )

        return settle


def unsubscribe_handler(tools: GraphTools, policy: RetryPolicy) -> Handler:
    """Delete the subscription of a removed monitor (best effort: it lapses within the hour)."""

    async def run(row: Claimed) -> Settle | None:
        config = await tools.db.query(teams_config, tools.secrets, row.account_id)
        kept = MonitorSecrets.opened(tools.secrets, row.payload.get("secret"))
        if config is None or not kept.refresh_token:
            raise Dropped("nothing to sign in with; the subscription lapses on its own")
        try:
            tokens = await tools.identity.refresh(config.credentials, kept.refresh_token)
        except IdentityError as exc:
            raise Dropped(f"the monitor cannot sign in any more ({exc.error})") from exc
        await tools.graph.delete_subscription(
            tokens.access.token, str(row.payload["subscription_id"])
        )
        return None

    return Handler(run=run, policy=policy)
