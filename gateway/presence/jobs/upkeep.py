"""Subscription upkeep as outbox jobs (the directory job is ``jobs.directory``).

Jobs are outbox rows like any other side effect: claimed with a lease, retried on
failure, and each run leaves its next run behind (``Transaction.enqueue_once``), so they
go on after a restart. Upkeep is a serial kind (one row per monitor claimed at a time),
and a run also holds the monitor itself (``upkeep_until``), so two runs of it never
overlap, even when two processes claim at the same instant.

- ``presence.upkeep`` (per monitor): refreshes the monitor's tokens (the new refresh token
  replaces the old; ``invalid_grant`` and kin make it ``not_authorized``), then creates,
  renews or replaces its subscription with the monitor's delegated token, and reads back
  the presence of its users after any gap (a new subscription, a lifecycle event). It runs
  again at half the lifetime Graph granted, and at least every two minutes, so a dropped
  subscription or a revoked monitor is noticed within minutes.
- ``presence.unsubscribe``: deletes the subscription of a removed monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from secrets import token_urlsafe
from typing import Any, TypeVar

from sqlalchemy import Connection, or_, select, update

from gateway.clients.graph import GraphError, Subscription
from gateway.clients.http import ProviderError
from gateway.clients.identity import AppCredentials, IdentityError, UserTokens
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Dropped, Handler, Settle
from gateway.presence.certificates import current_certificate
from gateway.presence.from_teams import apply_graph_presences
from gateway.presence.jobs.graph import (
    GraphTools,
    live_monitor,
    log,
    presence_config,
    read_presences,
)
from gateway.presence.monitors import (
    AUTHORIZED,
    DIRECTORY,
    NOT_AUTHORIZED,
    SUBSCRIBED,
    UPKEEP,
    MonitorSecrets,
    change_secrets,
    monitor_users,
    set_monitor,
)
from gateway.presence.teams import NEEDS_UPDATE, TeamsConfig, teams_config
from gateway.security import SecretBox, token_digest
from storage.engine import Database
from storage.errors import DatabaseUnavailable
from storage.outbox import Claimed
from storage.rows import MonitorRow
from storage.tables import PRESENCE_MONITORS, utcnow
from storage.transaction import Transaction

T = TypeVar("T")

UPKEEP_AT_MOST = 120.0
UPKEEP_AT_LEAST = 10.0
# How long one upkeep run may hold its monitor (a crashed run frees it after this). Longer
# than a run can take (a token refresh waited for a minute and its storing for two, a
# subscription for half a minute, reads): a second run taking a hold the first still needs
# would refresh with a refresh token the first has just spent.
UPKEEP_LEASE = 300.0
# Seconds before an upkeep that found another one running tries again.
UPKEEP_BUSY_RETRY = 2.0
# Seconds a new refresh token is tried to be stored for while the database is busy.
KEEP_WITHIN = 120.0
# Graph allows 60; a little less, so that a clock ahead of Graph's is not refused.
SUBSCRIPTION_MINUTES = 55


# -- a monitor's upkeep ---------------------------------------------------------------


def _upkeep_plan(
    conn: Connection, secrets: SecretBox, monitor_id: str
) -> tuple[Any, TeamsConfig, MonitorSecrets, list[str]]:
    monitor = live_monitor(conn, monitor_id)
    return (
        monitor,
        presence_config(conn, secrets, monitor.account_id),
        MonitorSecrets.opened(secrets, monitor.secret),
        monitor_users(conn, monitor_id),
    )


def _take_upkeep(tx: Transaction, monitor_id: str) -> tuple[bool, bool]:
    """Hold the monitor's upkeep for ``UPKEEP_LEASE`` seconds: (taken, resync wanted).

    The resync request is taken with it (cleared here), so that one arriving while this
    run goes on is kept for the next. A monitor that is gone is not held: the plan then
    drops the job.
    """
    moment = time.time()
    found = tx.conn.execute(
        select(PRESENCE_MONITORS.c.resync_needed).where(PRESENCE_MONITORS.c.id == monitor_id)
    ).first()
    if found is None:
        return True, False
    taken = tx.conn.execute(
        update(PRESENCE_MONITORS)
        .where(
            PRESENCE_MONITORS.c.id == monitor_id,
            or_(
                PRESENCE_MONITORS.c.upkeep_until.is_(None),
                PRESENCE_MONITORS.c.upkeep_until < moment,
            ),
        )
        .values(upkeep_until=moment + UPKEEP_LEASE, resync_needed=False)
    )
    return bool(taken.rowcount == 1), bool(found.resync_needed)


async def _keep_refresh_token(
    db: Database, secrets: SecretBox, monitor_id: str, refresh_token: str
) -> None:
    """Store a new refresh token, trying again while the database is busy or away for up
    to ``KEEP_WITHIN`` seconds: the platform may already refuse the old one (the gateway
    assumes it does, decision 0013), so a token not stored signs the monitor out until a
    person signs it in again."""
    deadline = time.monotonic() + KEEP_WITHIN
    attempt = 0
    while True:
        attempt += 1
        try:
            await db.transact(
                lambda tx: change_secrets(tx, secrets, monitor_id, refresh_token=refresh_token)
            )
        except DatabaseUnavailable:
            if time.monotonic() >= deadline:
                log.error("monitor_refresh_token_lost", monitor_id=monitor_id, attempts=attempt)
                raise
            await asyncio.sleep(min(0.2 * attempt, 2.0))
        else:
            return


async def _to_the_end(step: Awaitable[T], undo: Callable[[T], Awaitable[None]] | None = None) -> T:
    """``step``'s result; cancelled meanwhile, the step still runs to its end (and what it
    did is undone by ``undo``) before the cancellation goes on."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            done = await task
            if undo is not None:
                await undo(done)
        raise


async def _refreshed(
    tools: GraphTools, monitor_id: str, creds: AppCredentials, refresh_token: str
) -> UserTokens:
    """The monitor's new tokens, its new refresh token stored, as one step that
    cancellation cannot split.

    The identity platform may spend the old refresh token as soon as it issues the new
    one, so an upkeep cancelled between the two (its time ran out, the process stops)
    would otherwise leave the monitor with a spent token and sign it out at the next
    run.
    """

    async def step() -> UserTokens:
        tokens = await tools.identity.refresh(creds, refresh_token)
        if tokens.refresh_token:
            await _keep_refresh_token(tools.db, tools.secrets, monitor_id, tokens.refresh_token)
        return tokens

    return await _to_the_end(step())


def _signed_out(monitor: MonitorRow, message: str) -> Settle:
    def settle(tx: Transaction) -> None:
        set_monitor(
            tx,
            monitor.id,
            status=NOT_AUTHORIZED,
            last_error=message[:1000],
        )
        # Its users move to the monitors still authorized.
        tx.enqueue_once(account_id=monitor.account_id, kind=DIRECTORY, target_id=monitor.account_id)

    return settle


def _unvalidated(exc: GraphError, url: str) -> ProviderError | None:
    """Graph's refusal of a subscription whose notification URL did not answer its
    validation request in time (400 ``ValidationError``), as a failure tried again.

    The answer depends on this gateway, not on the request: a replica busy for ten seconds,
    or a load balancer still starting, fails the validation once and passes it the next
    time. Dead-lettering it would leave the monitor unsubscribed until its next upkeep.
    """
    if exc.status != 400 or exc.graph_code != "ValidationError":
        return None
    return ProviderError(
        f"{exc} Graph must reach {url} and get its answer within 10 seconds; trying again",
        retryable=True,
        status=exc.status,
        code=exc.code,
    )


def upkeep_handler(tools: GraphTools, policy: RetryPolicy) -> Handler:
    """Keep a monitor's subscription alive and its users' presence current."""
    upkeep = _Upkeep(tools)

    def on_dead(tx: Transaction, row: Claimed, exc: Exception) -> None:
        # Upkeep never stops: the failure is shown on the monitor and the job comes back.
        set_monitor(tx, row.target_id, last_error=str(exc)[:1000])
        tx.enqueue_once(
            account_id=row.account_id,
            kind=UPKEEP,
            target_id=row.target_id,
            delay=tools.upkeep_every,
        )

    return Handler(run=upkeep.run, policy=policy, on_dead=on_dead, serial=True)


@dataclass(frozen=True)
class _Upkeep:
    tools: GraphTools

    async def run(self, row: Claimed) -> Settle | None:
        """One upkeep at a time per monitor: taken here, given back with the settle."""
        db = self.tools.db

        async def give_back(held: tuple[bool, bool]) -> None:
            if held[0]:
                await self._release(row.target_id, resync=held[1])

        # A hold taken by a run cancelled meanwhile is given back at once, not left to
        # block the monitor for UPKEEP_LEASE.
        taken, resync = await _to_the_end(
            db.transact(lambda tx: _take_upkeep(tx, row.target_id)), give_back
        )
        if not taken:
            # Tried again soon: the other one usually ends within seconds. The policy's
            # backoff spaces the attempts out past a hold left by a crashed run.
            raise ProviderError(
                "another upkeep of this monitor is running",
                retryable=True,
                retry_after=UPKEEP_BUSY_RETRY,
            )
        try:
            settle = await self._run(row, resync)
        except BaseException:
            await self._release(row.target_id, resync=resync)
            raise

        def settle_and_release(tx: Transaction) -> None:
            if settle is not None:
                settle(tx)
            set_monitor(tx, row.target_id, upkeep_until=None)

        return settle_and_release

    async def _release(self, monitor_id: str, *, resync: bool) -> None:
        """Give the monitor's hold back, with the resync it took if there was one."""
        values: dict[str, Any] = {"upkeep_until": None}
        if resync:
            values["resync_needed"] = True
        await self.tools.db.transact(lambda tx: set_monitor(tx, monitor_id, **values))

    async def _run(self, row: Claimed, resync: bool) -> Settle | None:
        monitor, config, kept, users = await self.tools.db.query(
            _upkeep_plan, self.tools.secrets, row.target_id
        )
        creds = config.credentials
        if (monitor.tenant_id, monitor.client_id) != (creds.tenant_id, creds.client_id):

            def needs_update(tx: Transaction) -> None:
                set_monitor(tx, monitor.id, status=NEEDS_UPDATE)

            return needs_update
        if not kept.refresh_token:
            return _signed_out(monitor, "No refresh token: sign the monitor in again.")
        try:
            tokens = await _refreshed(self.tools, monitor.id, creds, kept.refresh_token)
        except IdentityError as exc:
            if exc.signed_out:
                if await self._refresh_token_moved(monitor.id, kept.refresh_token):
                    # Another run spent the token read here and stored its successor.
                    raise ProviderError(
                        "the monitor's refresh token was renewed meanwhile; trying again",
                        retryable=True,
                    ) from exc
                return _signed_out(monitor, str(exc))
            if exc.bad_client:
                # The app's secret, not the monitor: the system check shows it, and the
                # monitor goes on once the secret is renewed.
                raise ProviderError(
                    f"the Teams app is refused ({exc}); renew its client secret",
                    retryable=True,
                ) from exc
            raise
        return await self._subscribe(monitor, tokens.access.token, users, config, resync)

    async def _refresh_token_moved(self, monitor_id: str, used: str) -> bool:
        """Whether the stored refresh token is no longer the one ``used``."""

        def stored(conn: Connection) -> str | None:
            monitor = live_monitor(conn, monitor_id)
            return MonitorSecrets.opened(self.tools.secrets, monitor.secret).refresh_token

        return await self.tools.db.query(stored) not in (None, used)

    async def _create(
        self,
        token: str,
        users: list[str],
        *,
        client_state: str,
        certificate: tuple[str, str] | None,
    ) -> Subscription:
        """A new subscription; one left over from an earlier run (Graph allows one per user
        and app: 409) is deleted first when it points at this gateway."""
        graph = self.tools.graph
        url = self.tools.public_url + "/webhooks/graph/notifications"

        async def create() -> Subscription:
            try:
                return await graph.create_subscription(
                    token,
                    user_ids=users,
                    notification_url=url,
                    lifecycle_url=self.tools.public_url + "/webhooks/graph/lifecycle",
                    expires_at=datetime.now(UTC) + timedelta(minutes=SUBSCRIPTION_MINUTES),
                    client_state=client_state,
                    certificate=certificate,
                )
            except GraphError as exc:
                unvalidated = _unvalidated(exc, url)
                if unvalidated is None:
                    raise
                raise unvalidated from exc

        try:
            return await create()
        except GraphError as exc:
            if exc.status != 409:
                raise
        leftovers = [
            item
            for item in await graph.list_subscriptions(token)
            if item.get("notificationUrl") == url and item.get("id")
        ]
        if not leftovers:
            raise ProviderError(
                "Graph holds another presence subscription for this monitor and app (not "
                "this gateway's): delete it, or use another monitor account.",
                retryable=False,
                status=409,
            )
        for item in leftovers:
            await graph.delete_subscription(token, str(item["id"]))
        try:
            return await create()
        except GraphError as exc:
            if exc.status != 409:
                raise
            # A create sent earlier without an answer was made in the meantime: the next
            # try, in a moment, finds it and replaces it.
            raise ProviderError(
                "a subscription of this monitor appeared while it was replaced; trying again",
                retryable=True,
                retry_after=2.0,
            ) from exc

    async def _subscription(
        self, monitor: MonitorRow, token: str, users: list[str], digest: str
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
        self, monitor: MonitorRow, token: str, users: list[str], config: TeamsConfig, resync: bool
    ) -> Settle:
        graph = self.tools.graph
        certificate = (
            await current_certificate(self.tools.db, self.tools.secrets)
            if self.tools.resource_data
            else None
        )
        # A new certificate (rotation) or a new set of users means a new subscription.
        covered = [*users, certificate.id if certificate is not None else ""]
        digest = hashlib.sha256(",".join(covered).encode()).hexdigest()
        client_state = monitor.client_state
        if not users:
            if monitor.subscription_id:
                await graph.delete_subscription(token, monitor.subscription_id)
            subscription_id, expires_at, resync = None, None, False
        else:
            subscription_id, expires_at = await self._subscription(monitor, token, users, digest)
        if users and subscription_id is None:
            secret = token_urlsafe(24)
            client_state = token_digest(secret)
            # Recorded before Graph is asked, so that the first notifications are recognised.
            await self.tools.db.transact(
                lambda tx: set_monitor(tx, monitor.id, client_state=client_state)
            )
            created = await self._create(
                token,
                users,
                client_state=f"{monitor.id}.{secret}",
                certificate=(certificate.id, certificate.certificate_der_b64)
                if certificate is not None
                else None,
            )
            subscription_id, expires_at = created.id, created.expires_at.timestamp()
            resync = True
        presences: list[dict[str, Any]] = []
        read_at = utcnow()
        if resync and users:
            read_at, presences = await read_presences(self.tools, config.credentials, users)
        lifetime = (expires_at - time.time()) if expires_at else UPKEEP_AT_MOST * 2
        longest = self.tools.upkeep_every
        delay = max(min(UPKEEP_AT_LEAST, longest), min(longest, lifetime / 2))

        def settle(tx: Transaction) -> None:
            set_monitor(
                tx,
                monitor.id,
                status=SUBSCRIBED if subscription_id else AUTHORIZED,
                subscription_id=subscription_id,
                subscription_expires_at=expires_at,
                subscription_hash=digest if subscription_id else None,
                client_state=client_state,
                certificate_id=certificate.id if certificate is not None else None,
                last_error=None,
            )
            # A notification stored since the read is newer than what was read.
            apply_graph_presences(tx, monitor.account_id, presences, read_at=read_at)
            tx.enqueue_once(
                account_id=monitor.account_id, kind=UPKEEP, target_id=monitor.id, delay=delay
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
