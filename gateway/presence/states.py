"""Users' presence per source, read for many users at once and written in step.

A unit that stores presence (a CloudLink change, a notification POST, a read-back of 650
users) reads the current state of its users in one query (locked on PostgreSQL, in one
order, so that two processes storing the same users queue instead of racing), works out
the changes in memory and writes them with statements compiled once. A state equal to
the stored one only refreshes its raw data, if that changed; a new one bumps the
version.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from storage.prepared import Prepared
from storage.tables import PRESENCE_STATES
from storage.upsert import insert_if_absent

# Ids per IN list: far below every backend's limit on parameters.
CHUNK = 500


def _update_state(**values: Any) -> Prepared:
    """An UPDATE of one user's state from one source (``state_user``, ``state_source``)."""
    return Prepared(
        update(PRESENCE_STATES)
        .where(
            PRESENCE_STATES.c.user_id == bindparam("state_user"),
            PRESENCE_STATES.c.source == bindparam("state_source"),
        )
        .values(**values)
    )


_SET_STATE = _update_state(
    availability=bindparam("availability"),
    activity=bindparam("activity"),
    raw=bindparam("raw"),
    version=bindparam("version"),
    updated_at=bindparam("updated_at"),
)
_SET_RAW = _update_state(raw=bindparam("raw"))


@dataclass(frozen=True)
class Stored:
    """One source's state of a user, as stored."""

    availability: str
    activity: str
    version: int
    updated_at: datetime
    raw: dict[str, Any] | None = None


def chunks(values: Sequence[str]) -> Iterator[list[str]]:
    """``values`` in lists short enough for one IN."""
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _load(conn: Connection, user_ids: Sequence[str]) -> dict[str, dict[str, Stored]]:
    """Every source's state of the users; on PostgreSQL locked until commit."""
    found: dict[str, dict[str, Stored]] = {}
    for chunk in chunks(sorted(set(user_ids))):
        query = (
            select(
                PRESENCE_STATES.c.user_id,
                PRESENCE_STATES.c.source,
                PRESENCE_STATES.c.availability,
                PRESENCE_STATES.c.activity,
                PRESENCE_STATES.c.version,
                PRESENCE_STATES.c.updated_at,
                PRESENCE_STATES.c.raw,
            )
            .where(PRESENCE_STATES.c.user_id.in_(chunk))
            .order_by(PRESENCE_STATES.c.user_id, PRESENCE_STATES.c.source)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for row in conn.execute(query):
            found.setdefault(row.user_id, {})[row.source] = Stored(
                row.availability, row.activity, row.version, _aware(row.updated_at), row.raw
            )
    return found


class States:
    """The stored states of some users, kept in step with what the unit writes.

    Used as a context manager: new states are inserted at once (another unit may insert
    the same user's first state), changed ones are updated together when the block ends
    without an error (one ``executemany``, one row per user and source with its newest
    values; nothing reads them back before).
    """

    def __init__(self, conn: Connection, user_ids: Sequence[str]) -> None:
        self._conn = conn
        self._states = _load(conn, user_ids)
        # Rows to update at the end: (user, source) -> whether the state changed (else
        # only its raw data). Their values are the newest in ``_states``.
        self._dirty: dict[tuple[str, str], bool] = {}

    def __enter__(self) -> States:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        dirty, self._dirty = self._dirty, {}
        if kind is not None:
            return
        changed: list[dict[str, Any]] = []
        raws: list[dict[str, Any]] = []
        for (user_id, source), state_changed in dirty.items():
            stored = self._states[user_id][source]
            where = {"state_user": user_id, "state_source": source, "raw": stored.raw}
            if state_changed:
                changed.append(
                    {
                        **where,
                        "availability": stored.availability,
                        "activity": stored.activity,
                        "version": stored.version,
                        "updated_at": stored.updated_at,
                    }
                )
            else:
                raws.append(where)
        _SET_STATE.run_many(self._conn, changed)
        _SET_RAW.run_many(self._conn, raws)

    def get(self, user_id: str, source: str) -> Stored | None:
        """The user's state from ``source``, if any."""
        return self._states.get(user_id, {}).get(source)

    def pairs(self, user_id: str) -> dict[str, tuple[str, str]]:
        """Every source's ``(availability, activity)`` of the user, as stored now."""
        return {
            source: (stored.availability, stored.activity)
            for source, stored in self._states.get(user_id, {}).items()
        }

    def put(
        self,
        user_id: str,
        source: str,
        pair: tuple[str, str],
        raw: dict[str, Any] | None,
        now: datetime,
    ) -> bool:
        """Store one source's ``(availability, activity)``; False when it was that already
        (only ``raw`` refreshed)."""
        sources = self._states.setdefault(user_id, {})
        current = sources.get(source)
        availability, activity = pair
        if current is None:
            inserted = insert_if_absent(
                self._conn,
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
            )
            if inserted:
                sources[source] = Stored(availability, activity, 1, now, raw)
                return True
            # Another unit stored the user's first state since the read: take it.
            current = _load(self._conn, [user_id])[user_id][source]
            sources[source] = current
        if (current.availability, current.activity) == pair:
            # A read-back of users in step with Teams writes nothing.
            if current.raw != raw:
                self._dirty.setdefault((user_id, source), False)
                sources[source] = replace(current, raw=raw)
            return False
        version = current.version + 1
        self._dirty[(user_id, source)] = True
        sources[source] = Stored(availability, activity, version, now, raw)
        return True
