"""Token buckets kept in the database, so that every replica takes from the same one.

A limit an operator configures (an account's SCIM requests a second) or a provider sets
(Graph's presence requests per tenant and app) is the limit of the whole deployment, not
of each replica. Replicas take tokens in small batches (``take``), so the database sees a
few statements a second per busy key, none for an idle one, and nothing per request.
The bucket refills by the database's clock: replicas' clocks may disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from storage.tables import RATE_BUDGETS


@dataclass(frozen=True)
class Taken:
    """Whole tokens taken (0 to ``want``) and, when none, seconds until one is held."""

    tokens: int
    wait: float


def take(conn: Connection, *, key: str, rate: float, burst: float, want: int) -> Taken:
    """Take up to ``want`` whole tokens of the bucket ``key`` (``rate`` a second, at most
    ``burst`` held, full when first used), in the caller's transaction (PostgreSQL)."""
    clock = func.extract("epoch", func.clock_timestamp())
    locked = (
        select(RATE_BUDGETS.c.tokens, RATE_BUDGETS.c.updated_at, clock.label("now"))
        .where(RATE_BUDGETS.c.key == key)
        .with_for_update()
    )
    row = conn.execute(locked).first()
    if row is None:
        # The key's first take: made full (once, whichever replica comes first).
        conn.execute(
            pg_insert(RATE_BUDGETS)
            .values(key=key, tokens=burst, updated_at=clock)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = conn.execute(locked).one()
    now = float(row.now)
    held = min(burst, row.tokens + max(0.0, now - row.updated_at) * rate)
    taken = max(0, min(want, math.floor(held)))
    conn.execute(
        update(RATE_BUDGETS)
        .where(RATE_BUDGETS.c.key == key)
        .values(tokens=held - taken, updated_at=now)
    )
    return Taken(taken, 0.0 if taken else (1 - held) / rate)
