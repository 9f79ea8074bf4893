"""Teams presence into the gateway, many users a unit: notifications and read-backs.

A notification POST from Graph carries up to hundreds of items and a read-back 650
users, so their states are stored together: the users in one query, their states in
another (``States``), item after item in the order Graph gave them. A new state records
``presence.changed`` with the combined state of every source.

A state equal to what the gateway wrote into Teams lately is that write coming back
(its echo): stored, no event, once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from gateway.events.service import Actor
from gateway.presence.models import TEAMS
from gateway.presence.service import ECHO_SECONDS, changed_event
from gateway.presence.states import States, chunks
from storage.prepared import Prepared
from storage.tables import PRESENCE_USERS, utcnow
from storage.transaction import Transaction

TEAMS_ACTOR = Actor("Microsoft Teams", "graph")

_SET_WRITTEN = Prepared(
    update(PRESENCE_USERS)
    .where(PRESENCE_USERS.c.id == bindparam("user"))
    .values(written=bindparam("written"))
)


@dataclass(frozen=True)
class TeamsState:
    """One presence resource as Graph gives it, bounded to what the tables hold."""

    teams_user_id: str
    availability: str
    activity: str
    raw: dict[str, Any]

    @classmethod
    def of(cls, presence: dict[str, Any]) -> TeamsState:
        """From Graph's ``presence`` resource (a notification's or a read's)."""
        return cls(
            teams_user_id=str(presence.get("id", ""))[:64],
            availability=str(presence.get("availability") or "PresenceUnknown")[:40],
            activity=str(presence.get("activity") or "PresenceUnknown")[:60],
            raw=presence,
        )


def _users(conn: Connection, account_id: str, teams_ids: Sequence[str]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for chunk in chunks(sorted(set(teams_ids))):
        rows = conn.execute(
            select(
                PRESENCE_USERS.c.id,
                PRESENCE_USERS.c.account_id,
                PRESENCE_USERS.c.email,
                PRESENCE_USERS.c.teams_user_id,
                PRESENCE_USERS.c.written,
            ).where(
                PRESENCE_USERS.c.account_id == account_id,
                PRESENCE_USERS.c.teams_user_id.in_(chunk),
            )
        )
        for row in rows:
            found.setdefault(row.teams_user_id, []).append(row)
    return found


class _Echoes:
    """What the gateway wrote into each user's Teams presence, marked when it came back."""

    def __init__(self, tx: Transaction, users: dict[str, list[Any]]) -> None:
        self._tx = tx
        self._written: dict[str, dict[str, Any]] = {
            user.id: user.written or {} for rows in users.values() for user in rows
        }

    def take(self, user_id: str, state: TeamsState) -> bool:
        """Whether this state is the gateway's own write coming back (then marked seen)."""
        written = self._written.get(user_id) or {}
        if (
            written.get("echoed")
            or written.get("availability") != state.availability
            or written.get("activity") != state.activity
            or time.time() - float(written.get("at", 0)) >= ECHO_SECONDS
        ):
            return False
        # Once: a later return to the same state is the user's and is reported.
        marked = {**written, "echoed": True}
        _SET_WRITTEN.run(self._tx.conn, {"user": user_id, "written": marked})
        self._written[user_id] = marked
        return True


def apply_graph_presences(
    tx: Transaction,
    account_id: str,
    presences: Sequence[dict[str, Any]],
    *,
    read_at: datetime | None = None,
) -> int:
    """Store presence resources as Graph gives them (read back or in notifications), in
    order; returns how many events.

    ``read_at``: when they were read back, so that a state stored since (a notification
    newer than the read) is not overwritten.
    """
    states = [TeamsState.of(presence) for presence in presences]
    if not states:
        return 0
    users = _users(tx.conn, account_id, [state.teams_user_id for state in states])
    echoes = _Echoes(tx, users)
    now = utcnow()
    events = 0
    with (
        States(tx.conn, [user.id for rows in users.values() for user in rows]) as stored,
        tx.batched_events(),
    ):
        for state in states:
            pair = (state.availability, state.activity)
            for user in users.get(state.teams_user_id, ()):
                if read_at is not None:
                    current = stored.get(user.id, TEAMS)
                    if current is not None and current.updated_at > read_at:
                        continue
                if not stored.put(user.id, TEAMS, pair, state.raw, now) or echoes.take(
                    user.id, state
                ):
                    continue
                changed_event(tx, user, TEAMS, pair, TEAMS_ACTOR, combined=stored.pairs(user.id))
                events += 1
    return events
