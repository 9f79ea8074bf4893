"""Teams presence read back after a basic change notification: ``presence.read`` rows.

Since 2024 a basic presence notification carries only the user's id, so the receiver
stores one pending read per user (a second notification for the same user joins it) and
answers Graph at once; this handler reads the newest state with
``getPresencesByUserId``, up to 650 users of a tenant a call, and stores it with its
event in the row's settling transaction.
"""

from __future__ import annotations

from typing import Any

from gateway.clients.graph import MAX_PRESENCE_IDS, GraphApi
from gateway.clients.identity import AppCredentials, IdentityPlatform
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Dropped, Handler, Settle
from gateway.presence.from_teams import apply_graph_presences
from gateway.presence.jobs.graph import (
    Budgets,
    TenantBatcher,
    presence_config,
    with_app_token,
)
from gateway.security import SecretBox
from storage.engine import Database
from storage.outbox import Claimed
from storage.transaction import Transaction


class PresenceReader:
    """Reads the presence of many users of a tenant in few calls."""

    def __init__(self, graph: GraphApi, identity: IdentityPlatform, budgets: Budgets) -> None:
        async def send(creds: AppCredentials, ids: list[str]) -> list[dict[str, Any] | None]:
            unique = sorted(set(ids))
            found = await with_app_token(
                identity, creds, lambda token: graph.presences(token, unique)
            )
            by_id = {str(item.get("id")): item for item in found}
            return [by_id.get(user_id) for user_id in ids]

        self._batcher: TenantBatcher[str, dict[str, Any] | None] = TenantBatcher(
            send, budgets, size=MAX_PRESENCE_IDS, cost=lambda _count: 1
        )

    async def read(self, creds: AppCredentials, user_id: str) -> dict[str, Any] | None:
        """The user's presence as Graph returns it, or None if Graph has none."""
        return await self._batcher.submit(creds, user_id)


def presence_read_handler(
    db: Database, secrets: SecretBox, reader: PresenceReader, policy: RetryPolicy
) -> Handler:
    """Read a user's Teams presence and store it (an event when it changed)."""

    async def run(row: Claimed) -> Settle | None:
        config = await db.query(presence_config, secrets, row.account_id)
        presence = await reader.read(config.credentials, row.target_id)
        if presence is None:
            raise Dropped("Graph has no presence for the user")

        def settle(tx: Transaction) -> None:
            apply_graph_presences(tx, row.account_id, [presence])

        return settle

    return Handler(run=run, policy=policy)
