"""Webhook receipts are kept as long as their provider may retry, then forgotten."""

from __future__ import annotations

import time

from sqlalchemy import insert, select

from gateway.chat.service import CONTENT_HASH_DAYS, TOKEN_DAYS, forget_old_receipts
from storage.engine import Database
from storage.tables import WEBHOOK_RECEIPTS
from storage.transaction import Transaction
from tests.support.sync import run

DAY = 86400


def test_old_receipts_are_forgotten_by_their_window(db: Database) -> None:
    """CM.com content hashes live 35 days, Twilio ids and tokens two."""
    now = time.time()
    ages = {
        "hash:recent": (CONTENT_HASH_DAYS - 1) * DAY,
        "hash:old": (CONTENT_HASH_DAYS + 1) * DAY,
        "sid:recent": (TOKEN_DAYS - 1) * DAY,
        "sid:old": (TOKEN_DAYS + 1) * DAY,
    }

    def arrange(tx: Transaction) -> None:
        for key, age in ages.items():
            tx.conn.execute(
                insert(WEBHOOK_RECEIPTS).values(channel_id="c", key=key, received_at=now - age)
            )

    run(db.transact(arrange))
    run(db.transact(forget_old_receipts))
    kept = run(db.query(lambda conn: set(conn.execute(select(WEBHOOK_RECEIPTS.c.key)).scalars())))
    assert kept == {"hash:recent", "sid:recent"}
