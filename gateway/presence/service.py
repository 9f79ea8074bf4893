"""Presence changes: each one a ``Database.transact`` unit with its event and outbox row.

A CloudLink change stores the user's ``cloudlink`` state, records ``presence.changed``
and, when the account writes presence into Teams, leaves one ``presence.write`` row for
the user: a pending row is reused, and its handler reads the newest state when it runs,
so only the newest state of a user is sent however many changes were waiting. A Teams
change stores the ``teams`` state and records the event.

Loop suppression: the state the gateway writes into Teams is recorded before it is sent;
Teams reporting exactly that state back (once, within ten minutes) is the write's echo,
stored as Teams' state without an event, so CloudLink never hears its own change back
as a Teams change and nothing bounces. A CloudLink change that equals what is in Teams
already is written all the same (it only refreshes the gateway's session) and its echo is
suppressed the same way.
"""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, or_, select, update

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
from gateway.web.errors import NotFound
from storage.engine import Database
from storage.tables import (
    OUTBOX,
    PRESENCE_STATES,
    PRESENCE_USERS,
    SCIM_CLAIMS,
    utcnow,
)
from storage.transaction import Transaction
from storage.upsert import remember

WRITE = "presence.write"
# Teams presence to read back after a basic notification (one pending per user).
READ = "presence.read"
PRESENCE_EVENT = "Presence"
# How long a state the gateway wrote into Teams is expected back as a notification.
ECHO_SECONDS = 600.0

_event = functools.partial(record_event, event_type=PRESENCE_EVENT)

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


def presence_user(tx: Transaction, account_id: str, email: str) -> Any:
    """The user's presence row, created on first use (a race is settled by the unique key)."""
    key = fold(email)
    now = utcnow()
    remember(
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


def _put_state(
    tx: Transaction, user_id: str, source: str, state: tuple[str, str], raw: dict[str, Any] | None
) -> bool:
    """Store one source's ``(availability, activity)``; False when it was that already (only
    ``raw`` refreshed)."""
    availability, activity = state
    current = states_of(tx.conn, user_id).get(source)
    now = utcnow()
    if current is None:
        if remember(
            tx.conn,
            PRESENCE_STATES,
            {
                "user_id": user_id,
                "source": source,
                "availability": availability,
                "activity": activity,
                "raw": raw,
                "version": 1,
                "updated_at": now,
            },
        ):
            return True
        current = states_of(tx.conn, user_id)[source]
    same = (current.availability, current.activity) == (availability, activity)
    values: dict[str, Any] = (
        {"raw": raw}
        if same
        else {
            "availability": availability,
            "activity": activity,
            "raw": raw,
            "version": current.version + 1,
            "updated_at": now,
        }
    )
    tx.conn.execute(
        update(PRESENCE_STATES)
        .where(PRESENCE_STATES.c.user_id == user_id, PRESENCE_STATES.c.source == source)
        .values(**values)
    )
    return not same


def _combined(conn: Connection, user_id: str) -> dict[str, str] | None:
    pairs = {
        source: (row.availability, row.activity) for source, row in states_of(conn, user_id).items()
    }
    found = combine(pairs)
    return None if found is None else {"availability": found[0], "activity": found[1]}


def _changed_event(
    tx: Transaction, user: Any, source: str, state: tuple[str, str], actor: Actor
) -> None:
    availability, activity = state
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
            "combined": _combined(tx.conn, user.id),
        },
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def writes_to_teams(conn: Connection, account_id: str) -> bool:
    """Whether the account writes CloudLink presence into Teams."""
    row = find_integration(conn, account_id, TEAMS_INTEGRATION)
    return row is not None and row.status == "active" and bool(row.config.get("presence_to_teams"))


def queue_once(
    tx: Transaction, *, account_id: str, kind: str, target_id: str, delay: float = 0.0
) -> None:
    """One pending job per target: a waiting row is made due by ``delay`` from now if that
    is sooner, else a row is added.

    A row being worked on does not count: the change it did not see gets a run of its own.
    Handlers that must not overlap with themselves hold their target while they run (a
    monitor's upkeep); presence writes read the newest state and go out in order.
    """
    moment = time.time()
    at = moment + delay
    reused = tx.conn.execute(
        update(OUTBOX)
        .where(
            OUTBOX.c.kind == kind,
            OUTBOX.c.target_id == target_id,
            OUTBOX.c.account_id == account_id,
            OUTBOX.c.status == "pending",
            # Unclaimed, or claimed by a worker whose lease ran out (it is free again).
            or_(OUTBOX.c.lease_owner.is_(None), OUTBOX.c.lease_until <= moment),
        )
        .values(
            available_at=case((OUTBOX.c.available_at > at, at), else_=OUTBOX.c.available_at),
            updated_at=moment,
        )
    )
    if reused.rowcount == 0:
        tx.enqueue(account_id=account_id, kind=kind, target_id=target_id, payload={}, delay=delay)


def queue_write(tx: Transaction, account_id: str, user_id: str) -> None:
    """The user's pending ``presence.write``, due now (its handler sends the newest state)."""
    queue_once(tx, account_id=account_id, kind=WRITE, target_id=user_id)


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
        if not _put_state(tx, user.id, CLOUDLINK, (change.availability, change.activity), None):
            return Accepted(status="unchanged")
        _changed_event(tx, user, CLOUDLINK, (change.availability, change.activity), actor)
        if writes_to_teams(tx.conn, account_id):
            queue_write(tx, account_id, user.id)
        return Accepted(status="accepted")

    return await db.transact(work)


def apply_teams_presence(
    tx: Transaction,
    *,
    account_id: str,
    teams_user_id: str,
    availability: str,
    activity: str,
    raw: dict[str, Any] | None,
    actor: Actor,
    read_at: datetime | None = None,
) -> int:
    """Store Teams' state of a user (as Graph reported it); returns how many events.

    A state equal to what the gateway wrote into Teams lately is its own write coming
    back: stored, no event.
    """
    events = 0
    users = tx.conn.execute(
        select(PRESENCE_USERS).where(
            PRESENCE_USERS.c.account_id == account_id,
            PRESENCE_USERS.c.teams_user_id == teams_user_id,
        )
    ).all()
    for user in users:
        if read_at is not None:
            stored = states_of(tx.conn, user.id).get(TEAMS)
            if stored is not None and _aware(stored.updated_at) > read_at:
                continue
        if not _put_state(tx, user.id, TEAMS, (availability, activity), raw):
            continue
        written = user.written or {}
        echo = (
            not written.get("echoed")
            and written.get("availability") == availability
            and written.get("activity") == activity
            and time.time() - float(written.get("at", 0)) < ECHO_SECONDS
        )
        if echo:
            # The gateway's own write coming back, once: a later return to the same
            # state is the user's and is reported.
            tx.conn.execute(
                update(PRESENCE_USERS)
                .where(PRESENCE_USERS.c.id == user.id)
                .values(written={**written, "echoed": True})
            )
        else:
            _changed_event(tx, user, TEAMS, (availability, activity), actor)
            events += 1
    return events


TEAMS_ACTOR = Actor("Microsoft Teams", "graph")


def apply_graph_presence(
    tx: Transaction, account_id: str, presence: dict[str, Any], *, read_at: datetime | None = None
) -> int:
    """Store one presence resource as Graph gives it (read back or in a notification);
    ``read_at``: when it was read, so that a state stored since is not overwritten."""
    return apply_teams_presence(
        tx,
        account_id=account_id,
        teams_user_id=str(presence.get("id", ""))[:64],
        availability=str(presence.get("availability") or "PresenceUnknown")[:40],
        activity=str(presence.get("activity") or "PresenceUnknown")[:60],
        raw=presence,
        actor=TEAMS_ACTOR,
        read_at=read_at,
    )


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
