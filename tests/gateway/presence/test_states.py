"""Presence states stored many users a unit: updates deferred to the end keep call order."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select

from gateway.presence.models import TEAMS
from gateway.presence.states import States
from storage.engine import Database
from storage.tables import ACCOUNTS, PRESENCE_STATES, PRESENCE_USERS, utcnow
from storage.transaction import Transaction


def _user(db: Database) -> str:
    user_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())

    def add(tx: Transaction) -> None:
        now = utcnow()
        tx.conn.execute(
            insert(ACCOUNTS).values(id=account_id, name="A", created_at=now, updated_at=now)
        )
        tx.conn.execute(
            insert(PRESENCE_USERS).values(
                id=user_id, account_id=account_id, email="u@contoso.example"
            )
        )
        with States(tx.conn, [user_id]) as stored:
            stored.put(user_id, TEAMS, ("Available", "Available"), {"n": 0}, now)

    asyncio.run(db.transact(add))
    return user_id


def _puts(db: Database, user_id: str, *steps: tuple[tuple[str, str], dict[str, Any]]) -> None:
    def work(tx: Transaction) -> None:
        with States(tx.conn, [user_id]) as stored:
            for pair, raw in steps:
                stored.put(user_id, TEAMS, pair, raw, utcnow())

    asyncio.run(db.transact(work))


def _row(db: Database, user_id: str) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(
            select(
                PRESENCE_STATES.c.availability,
                PRESENCE_STATES.c.version,
                PRESENCE_STATES.c.raw,
            ).where(PRESENCE_STATES.c.user_id == user_id)
        ).one()


def test_a_raw_refresh_then_a_new_state_in_one_unit_keeps_the_newest_raw(db: Database) -> None:
    """Two items for one user in one POST: the raw stored is the new state's."""
    user_id = _user(db)
    _puts(db, user_id, (("Available", "Available"), {"n": 1}), (("Busy", "InACall"), {"n": 2}))
    assert tuple(_row(db, user_id)) == ("Busy", 2, {"n": 2})


def test_a_new_state_then_a_raw_refresh_in_one_unit_keeps_both(db: Database) -> None:
    """The later raw data of the same state is kept with the new state and its version."""
    user_id = _user(db)
    _puts(db, user_id, (("Busy", "InACall"), {"n": 1}), (("Busy", "InACall"), {"n": 2}))
    assert tuple(_row(db, user_id)) == ("Busy", 2, {"n": 2})


def test_nothing_is_updated_when_the_unit_fails(db: Database) -> None:
    """Deferred updates are dropped with the block that raised."""
    user_id = _user(db)

    def work(tx: Transaction) -> None:
        with States(tx.conn, [user_id]) as stored:
            stored.put(user_id, TEAMS, ("Busy", "InACall"), {"n": 1}, utcnow())
            raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        asyncio.run(db.transact(work))
    assert tuple(_row(db, user_id)) == ("Available", 1, {"n": 0})
