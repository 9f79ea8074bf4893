"""Presence changes: each one a ``Database.transact`` unit with its event and outbox row.

A CloudLink change stores the user's ``cloudlink`` state, records ``presence.changed``
and, when the account writes presence into Teams, leaves one ``presence.write`` row for
the user: a pending row is reused, and its handler reads the newest state when it runs,
so only the newest state of a user is sent however many changes were waiting. Teams
changes arrive many at a time and are stored by ``from_teams``.

Loop suppression: the state the gateway writes into Teams is recorded before it is sent;
Teams reporting exactly that state back (once, within ten minutes) is the write's echo,
stored as Teams' state without an event, so CloudLink never hears its own change back
as a Teams change and nothing bounces. A CloudLink change that equals what is in Teams
already is written all the same (it only refreshes the gateway's session) and its echo is
suppressed the same way.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from sqlalchemy import Connection, bindparam, select

from gateway.accounts.models import TEAMS as TEAMS_INTEGRATION
from gateway.accounts.service import find_integration, require_account
from gateway.events.service import Actor, record_event
from gateway.folding import fold
from gateway.presence.models import (
    CLOUDLINK,
    TEAMS,
    Accepted,
    PresenceChange,
    PresenceCheck,
    SourceState,
    combine,
    rank,
)
from gateway.presence.states import States
from gateway.web.errors import NotFound
from storage.engine import Database
from storage.rows import PresenceUserRow
from storage.tables import (
    PRESENCE_STATES,
    PRESENCE_USERS,
    SCIM_CLAIMS,
    utcnow,
)
from storage.transaction import Transaction
from storage.upsert import insert_if_absent

WRITE = "presence.write"
# Teams presence to read back after a basic notification (one pending per user).
READ = "presence.read"
PRESENCE_CATEGORY = "Presence"
# How long a state the gateway wrote into Teams is expected back as a notification.
ECHO_SECONDS = 600.0

_event = functools.partial(record_event, category=PRESENCE_CATEGORY)

_USER = select(PRESENCE_USERS).where(
    PRESENCE_USERS.c.account_id == bindparam("account_id"),
    PRESENCE_USERS.c.email == bindparam("email"),
)
_STATES = select(PRESENCE_STATES).where(PRESENCE_STATES.c.user_id == bindparam("user_id"))


def is_cloudlink_user(conn: Connection, account_id: str, email: str) -> bool:
    """Whether a provisioned user of the account has this email address."""
    found = conn.execute(
        select(SCIM_CLAIMS.c.user_pk).where(
            SCIM_CLAIMS.c.account_id == account_id,
            SCIM_CLAIMS.c.kind.in_(("email", "userName")),
            SCIM_CLAIMS.c.value_key == fold(email),
        )
    ).first()
    return found is not None


def presence_user(tx: Transaction, account_id: str, email: str) -> PresenceUserRow:
    """The user's presence row, created on first use (a race is settled by the unique key)."""
    key = fold(email)
    now = utcnow()
    insert_if_absent(
        tx.conn,
        PRESENCE_USERS,
        {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "email": key,
            "created_at": now,
            "updated_at": now,
        },
    )
    return tx.conn.execute(_USER, {"account_id": account_id, "email": key}).one()


def states_of(conn: Connection, user_id: str) -> dict[str, Any]:
    """The user's stored state rows by source."""
    return {row.source: row for row in conn.execute(_STATES, {"user_id": user_id})}


def changed_event(
    tx: Transaction,
    user: PresenceUserRow,
    source: str,
    state: tuple[str, str],
    actor: Actor,
    *,
    combined: dict[str, tuple[str, str]],
) -> None:
    """Record ``presence.changed`` for one source's new state of the user; ``combined``:
    every source's state of the user now."""
    availability, activity = state
    together = combine(combined)
    _event(
        tx,
        account_id=user.account_id,
        actor=actor,
        action="Edit",
        asset="Presence",
        asset_id=user.email,
        type="presence.changed",
        properties_changed=["availability", "activity"],
        details={
            "email": user.email,
            "source": source,
            "availability": availability,
            "activity": activity,
            "combined": None
            if together is None
            else {"availability": together[0], "activity": together[1]},
        },
    )


def writes_to_teams(conn: Connection, account_id: str) -> bool:
    """Whether the account writes CloudLink presence into Teams."""
    row = find_integration(conn, account_id, TEAMS_INTEGRATION)
    return row is not None and row.status == "active" and bool(row.config.get("presence_to_teams"))


def read_back(tx: Transaction, account_id: str, user_id: str) -> None:
    """The user's pending ``presence.read``, due now: Graph said their presence changed
    without saying to what."""
    tx.enqueue_once(account_id=account_id, kind=READ, target_id=user_id)


def queue_write(tx: Transaction, account_id: str, user_id: str) -> None:
    """The user's pending ``presence.write``, due now (its handler sends the newest state)."""
    tx.enqueue_once(account_id=account_id, kind=WRITE, target_id=user_id)


async def change_cloudlink_presence(
    db: Database, *, account_id: str, change: PresenceChange, actor: Actor
) -> Accepted:
    """Store a CloudLink presence change; it goes into Teams through the outbox."""

    def work(tx: Transaction) -> Accepted:
        require_account(tx.conn, account_id)
        if not is_cloudlink_user(tx.conn, account_id, change.user):
            raise NotFound(
                f"No user of this account has the email address {change.user!r}; presence is "
                "kept for provisioned users only."
            )
        user = presence_user(tx, account_id, change.user)
        pair = (change.availability, change.activity)
        with States(tx.conn, [user.id]) as stored:
            if not stored.put(user.id, CLOUDLINK, pair, None, utcnow()):
                return Accepted(status="unchanged")
            changed_event(tx, user, CLOUDLINK, pair, actor, combined=stored.pairs(user.id))
        if writes_to_teams(tx.conn, account_id):
            queue_write(tx, account_id, user.id)
        return Accepted(status="accepted")

    return await db.transact(work)


async def user_check(db: Database, *, account_id: str, email: str) -> PresenceCheck:
    """What the gateway knows of one user's presence: per source, combined, raw Teams data."""

    def read(conn: Connection) -> PresenceCheck:
        require_account(conn, account_id)
        user = conn.execute(_USER, {"account_id": account_id, "email": fold(email)}).one_or_none()
        if user is None:
            if not is_cloudlink_user(conn, account_id, email):
                raise NotFound(f"No user of this account has the email address {email!r}.")
            return PresenceCheck(
                email=fold(email),
                combined=None,
                sources={},
                teams_user_id=None,
                teams_raw=None,
                written_to_teams=None,
            )
        states = states_of(conn, user.id)
        sources = {
            source: SourceState(
                availability=row.availability, activity=row.activity, updated_at=row.updated_at
            )
            for source, row in states.items()
        }
        teams = states.get(TEAMS)
        return PresenceCheck(
            email=user.email,
            combined=max(sources.values(), key=lambda s: rank(s.availability), default=None),
            sources=sources,
            teams_user_id=user.teams_user_id,
            teams_raw=teams.raw if teams is not None else None,
            written_to_teams=user.written,
        )

    return await db.query(read)
