""" "Sync all": every watched user's Teams presence read back, one row per monitor.

"Sync all" queues a ``presence.sync`` row for each live monitor. Its handler reads the
monitor's users (650 at most: one ``getPresencesByUserId`` call, with the app token,
since reads need no delegated one) and stores what changed in the row's settling unit.
It leaves the monitor's sign-in and subscription to the upkeep: an operator's sync costs
the tenant one presence request per monitor and nothing else, and the monitors' rows run
side by side.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from gateway.accounts.teams import TeamsConfig, teams_config
from gateway.clients.graph import MAX_PRESENCE_IDS
from gateway.delivery.graph_batching import GraphTools, with_app_token
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.worker import Dropped, Handler, Settle
from gateway.presence.from_teams import apply_graph_presences
from gateway.presence.monitors import LIVE, set_monitor
from gateway.security import SecretBox
from storage.outbox import Claimed
from storage.tables import PRESENCE_MONITORS, PRESENCE_USERS, utcnow
from storage.transaction import Transaction


def _sync_plan(
    conn: Connection, secrets: SecretBox, monitor_id: str
) -> tuple[str, TeamsConfig, list[str]]:
    """The monitor's account, its Teams app and the Teams ids of its users."""
    monitor = conn.execute(
        select(PRESENCE_MONITORS.c.account_id, PRESENCE_MONITORS.c.status).where(
            PRESENCE_MONITORS.c.id == monitor_id
        )
    ).one_or_none()
    if monitor is None or monitor.status not in LIVE:
        raise Dropped("the monitor is gone or not authorized")
    config = teams_config(conn, secrets, monitor.account_id)
    if config is None or not config.presence_from_teams:
        raise Dropped("the account does not carry Teams presence")
    users = list(
        conn.scalars(
            select(PRESENCE_USERS.c.teams_user_id)
            .where(
                PRESENCE_USERS.c.monitor_id == monitor_id,
                PRESENCE_USERS.c.teams_user_id.is_not(None),
            )
            .order_by(PRESENCE_USERS.c.teams_user_id)
        )
    )
    return monitor.account_id, config, users


def sync_handler(tools: GraphTools, policy: RetryPolicy) -> Handler:
    """Read back the presence of one monitor's users and store what changed."""

    async def run(row: Claimed) -> Settle | None:
        account_id, config, users = await tools.db.query(_sync_plan, tools.secrets, row.target_id)
        if not users:
            return None
        # Spent from the tenant's presence budget like every other read.
        await tools.budgets.of(config.credentials).take(-(-len(users) // MAX_PRESENCE_IDS))
        read_at = utcnow()

        async def read(token: str) -> list[dict[str, Any]]:
            return await tools.graph.presences(token, users)

        presences = await with_app_token(tools.identity, config.credentials, read)

        def settle(tx: Transaction) -> None:
            # A notification stored since the read is newer than what was read.
            apply_graph_presences(tx, account_id, presences, read_at=read_at)

        return settle

    def on_dead(tx: Transaction, row: Claimed, exc: Exception) -> None:
        # Shown on the monitor; "sync all" counts it as failed.
        set_monitor(tx, row.target_id, last_error=f"sync all: {exc}"[:1000])

    return Handler(run=run, policy=policy, on_dead=on_dead)
