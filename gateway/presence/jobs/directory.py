"""The directory of an account, as an outbox job: its users in Teams, spread over monitors.

``presence.directory`` (per account, every 10 minutes and when monitors change) finds the
provisioned users in Teams (by email / UPN, once, in ``$batch`` lookups), spreads them over
the authorized monitors, at most 650 each, keeping users where they are, and makes the
upkeep of every monitor whose users changed due now.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Select, bindparam, select, update

from gateway.clients.graph import MAX_BATCH, BatchRequest, BatchResponse, GraphApi
from gateway.clients.http import ProviderError
from gateway.clients.identity import IdentityPlatform
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Dropped, Handler, Settle
from gateway.presence.jobs.assignment import assign, moves
from gateway.presence.jobs.graph import (
    GraphTools,
    refused_as_a_whole,
    send_batch,
    with_app_token,
)
from gateway.presence.monitors import DIRECTORY, LIVE, MONITOR_USERS, UPKEEP
from gateway.presence.teams import TeamsConfig, teams_config
from gateway.security import SecretBox
from storage.outbox import Claimed
from storage.tables import PRESENCE_MONITORS, PRESENCE_USERS, SCIM_CLAIMS, SCIM_USERS, utcnow
from storage.transaction import Transaction
from storage.upsert import insert_all_if_absent

DIRECTORY_EVERY = 600.0
LOOKUPS_PER_RUN = 2000
LOOKUPS_AT_ONCE = 4
# A user Teams does not know is looked up again after this long (they may be added).
LOOKUP_AGAIN = 3600.0


def _provisioned(account_id: str) -> Select[Any]:
    """The folded email addresses of the account's active provisioned users."""
    return (
        select(SCIM_CLAIMS.c.value_key)
        .join(SCIM_USERS, SCIM_USERS.c.pk == SCIM_CLAIMS.c.user_pk)
        .where(
            SCIM_CLAIMS.c.account_id == account_id,
            SCIM_CLAIMS.c.kind == "email",
            SCIM_USERS.c.active.is_(True),
        )
    )


def _provisioned_emails(conn: Connection, account_id: str) -> list[str]:
    rows = conn.execute(_provisioned(account_id).order_by(SCIM_CLAIMS.c.value_key))
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
    """Each email's Teams user id (None: not in the directory), 20 lookups a ``$batch``,
    a few batches at once.

    A batch refused as a whole is looked up again one email at a time; an email refused
    even alone is left out, to be looked up at the next run.
    """
    found: dict[str, str | None] = {}
    chunks = [emails[start : start + MAX_BATCH] for start in range(0, len(emails), MAX_BATCH)]
    gate = asyncio.Semaphore(LOOKUPS_AT_ONCE)

    async def send(requests: list[BatchRequest]) -> list[BatchResponse]:
        async def call(token: str) -> list[BatchResponse]:
            return await send_batch(graph, token, requests)

        return await with_app_token(identity, config.credentials, call)

    async def answered(requests: list[BatchRequest]) -> list[BatchResponse]:
        try:
            return await send(requests)
        except ProviderError as exc:
            if not refused_as_a_whole(exc):
                raise
            if len(requests) == 1:
                return [BatchResponse(requests[0].id, exc.status or 400)]
            return [(await answered([request]))[0] for request in requests]

    async def look(chunk: list[str]) -> None:
        requests = [
            BatchRequest(
                email, "GET", f"/users/{quote(email, safe='@')}?$select=id,userPrincipalName"
            )
            for email in chunk
        ]
        async with gate:
            answers = await answered(requests)
        for email, answer in zip(chunk, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict) and answer.body.get("id"):
                found[email] = str(answer.body["id"])
            elif answer.status == 404:
                found[email] = None

    await asyncio.gather(*(look(chunk) for chunk in chunks))
    return found


_RECORD_LOOKUP = (
    update(PRESENCE_USERS)
    .where(
        PRESENCE_USERS.c.account_id == bindparam("account"),
        PRESENCE_USERS.c.email == bindparam("key"),
    )
    .values(
        teams_user_id=bindparam("teams_user_id"),
        looked_up_at=bindparam("moment"),
        updated_at=bindparam("now"),
    )
)


def _record_lookups(
    tx: Transaction, account_id: str, found: dict[str, str | None], moment: float
) -> None:
    """Every looked-up user's row (added if new) with its Teams id, in two statements."""
    if not found:
        return
    now = utcnow()
    insert_all_if_absent(
        tx.conn,
        PRESENCE_USERS,
        [
            {
                "id": str(uuid.uuid4()),
                "account_id": account_id,
                "email": email,
                "created_at": now,
                "updated_at": now,
            }
            for email in found
        ],
    )
    tx.conn.execute(
        _RECORD_LOOKUP,
        [
            {
                "account": account_id,
                "key": email,
                "teams_user_id": teams_id,
                "moment": moment,
                "now": now,
            }
            for email, teams_id in found.items()
        ],
    )


def rebalance(tx: Transaction, account_id: str) -> list[str]:
    """Spread the account's Teams users over its live monitors; the monitors that changed.

    Only the users whose monitor changes are written, and only the user counts that differ,
    so a run with nothing new leaves every row as it was.
    """
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
    # Served in email order: when monitors run out of room, the same users keep theirs.
    current: dict[str, str | None] = {
        row.id: row.monitor_id
        for row in tx.conn.execute(
            select(PRESENCE_USERS.c.id, PRESENCE_USERS.c.monitor_id)
            .where(
                PRESENCE_USERS.c.account_id == account_id,
                PRESENCE_USERS.c.teams_user_id.is_not(None),
                # A user deleted, deactivated or re-addressed in provisioning is let go.
                PRESENCE_USERS.c.email.in_(_provisioned(account_id)),
            )
            .order_by(PRESENCE_USERS.c.email)
        )
    }
    released: dict[str, str | None] = {
        row.id: row.monitor_id
        for row in tx.conn.execute(
            select(PRESENCE_USERS.c.id, PRESENCE_USERS.c.monitor_id).where(
                PRESENCE_USERS.c.account_id == account_id,
                PRESENCE_USERS.c.monitor_id.is_not(None),
                PRESENCE_USERS.c.email.not_in(_provisioned(account_id)),
            )
        )
    }
    result = assign(monitors, current, MONITOR_USERS)
    before = {**current, **released}
    moved = moves(before, result)
    # A monitor that gained or lost a user needs a new subscription; one no longer live has
    # none to replace.
    changed: set[str] = {
        monitor
        for user_id, new in moved.items()
        for monitor in (before[user_id], new)
        if monitor is not None and monitor in result.watched
    }
    targets: dict[str | None, list[str]] = {}
    for user_id, new in moved.items():
        targets.setdefault(new, []).append(user_id)
    for target, ids in targets.items():
        for start in range(0, len(ids), 500):
            tx.conn.execute(
                update(PRESENCE_USERS)
                .where(PRESENCE_USERS.c.id.in_(ids[start : start + 500]))
                .values(monitor_id=target)
            )
    for monitor, ids in result.watched.items():
        tx.conn.execute(
            update(PRESENCE_MONITORS)
            .where(PRESENCE_MONITORS.c.id == monitor, PRESENCE_MONITORS.c.users != len(ids))
            .values(users=len(ids))
        )
    return sorted(changed)


def directory_handler(tools: GraphTools, policy: RetryPolicy) -> Handler:
    """Find the account's users in Teams and spread them over its monitors."""

    async def run(row: Claimed) -> Settle | None:
        config, unknown = await tools.db.query(_directory_plan, tools.secrets, row.target_id)
        # A bounded share per run, well within the row's lease; the rest in the next run.
        found = await _look_up(tools.graph, tools.identity, config, unknown[:LOOKUPS_PER_RUN])
        more = len(unknown) > LOOKUPS_PER_RUN
        moment = time.time()

        def settle(tx: Transaction) -> None:
            # Directory runs of one account are serialised by its lock: rebalancing reads
            # the assignment it rewrites.
            tx.lock_account(row.target_id)
            _record_lookups(tx, row.target_id, found, moment)
            for monitor_id in rebalance(tx, row.target_id):
                tx.enqueue_once(account_id=row.target_id, kind=UPKEEP, target_id=monitor_id)
            tx.enqueue_once(
                account_id=row.target_id,
                kind=DIRECTORY,
                target_id=row.target_id,
                delay=0.0 if more else DIRECTORY_EVERY,
            )

        return settle

    def on_dead(tx: Transaction, row: Claimed, exc: Exception) -> None:
        tx.enqueue_once(
            account_id=row.account_id,
            kind=DIRECTORY,
            target_id=row.target_id,
            delay=DIRECTORY_EVERY,
        )

    return Handler(run=run, policy=policy, on_dead=on_dead, serial=True)
