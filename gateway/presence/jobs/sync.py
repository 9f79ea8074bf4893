""" "Sync all": every watched user's Teams presence read back, one row per monitor.

"Sync all" queues a ``presence.sync`` row for each live monitor. Its handler reads the
monitor's users (650 at most: one ``getPresencesByUserId`` call, with the app token,
since reads need no delegated one) and stores what changed in the row's settling unit.
It leaves the monitor's sign-in and subscription to the upkeep: an operator's sync costs
the tenant one presence request per monitor and nothing else, and the monitors' rows run
side by side.
"""

from __future__ import annotations

from sqlalchemy import Connection

from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Handler, Settle
from gateway.presence.from_teams import apply_graph_presences
from gateway.presence.jobs.graph import (
    GraphTools,
    live_monitor,
    presence_config,
    read_presences,
)
from gateway.presence.monitors import monitor_users, set_monitor
from gateway.presence.teams import TeamsConfig
from gateway.security import SecretBox
from storage.outbox import Claimed
from storage.transaction import Transaction


def _sync_plan(
    conn: Connection, secrets: SecretBox, monitor_id: str
) -> tuple[str, TeamsConfig, list[str]]:
    """The monitor's account, its Teams app and the Teams ids of its users."""
    monitor = live_monitor(conn, monitor_id)
    return (
        monitor.account_id,
        presence_config(conn, secrets, monitor.account_id),
        monitor_users(conn, monitor_id),
    )


def sync_handler(tools: GraphTools, policy: RetryPolicy) -> Handler:
    """Read back the presence of one monitor's users and store what changed."""

    async def run(row: Claimed) -> Settle | None:
        account_id, config, users = await tools.db.query(_sync_plan, tools.secrets, row.target_id)
        if not users:
            return None
        read_at, presences = await read_presences(tools, config.credentials, users)

        def settle(tx: Transaction) -> None:
            # A notification stored since the read is newer than what was read.
            apply_graph_presences(tx, account_id, presences, read_at=read_at)

        return settle

    def on_dead(tx: Transaction, row: Claimed, exc: Exception) -> None:
        # Shown on the monitor; "sync all" counts it as failed.
        set_monitor(tx, row.target_id, last_error=f"sync all: {exc}"[:1000])

    return Handler(run=run, policy=policy, on_dead=on_dead, serial=True)
