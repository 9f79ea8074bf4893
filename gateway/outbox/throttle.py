"""One token bucket: ``rate`` tokens a second, at most ``burst`` held.

It paces every caller that must stay within a rate: the web layer's per-account SCIM
limit and its limit on wrong tokens (``gateway.web.ratelimit``, which answers how long
to wait), and Graph's presence budget per tenant (``gateway.presence.jobs.graph``, whose
jobs wait their turn). The clock is injectable so that tests need no sleeping.

On PostgreSQL the limits of a deployment are those of all its replicas together:
``SharedBuckets`` keeps each key's bucket in the database (``storage.budgets``) and each
replica takes from it in small batches.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from storage import budgets
from storage.engine import Database

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second on average, ``burst`` at once; starts full."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock: asyncio.Lock | None = None

    @property
    def tokens(self) -> float:
        """The tokens held now (refilled up to the clock's present)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    @property
    def full(self) -> bool:
        """Whether the bucket holds all it can: it remembers nothing of past takes."""
        return self.tokens >= self.burst

    def wait_for(self, count: float = 1) -> float:
        """Seconds until ``count`` tokens are held (0 when they are now)."""
        missing = count - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def try_take(self, count: float = 1) -> bool:
        """Take ``count`` tokens if they are held; False (nothing taken) otherwise."""
        if self.tokens < count:
            return False
        self._tokens -= count
        return True

    def spend(self, count: float = 1) -> None:
        """Take ``count`` tokens whatever is held, never going below none."""
        self._tokens = max(0.0, self.tokens - count)

    async def take(self, count: float = 1) -> None:
        """Wait until ``count`` tokens (at most the burst) are held, then take them; callers
        are served one at a time, in turn."""
        count = min(count, self.burst)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while not self.try_take(count):
                await asyncio.sleep(self.wait_for(count))


def whole_seconds(wait: float) -> int:
    """A wait as the whole seconds of a ``Retry-After`` header (at least 1)."""
    return max(1, math.ceil(wait))


# A replica takes at most this share of a second's tokens at once: the limit holds within
# replicas x batch tokens, and a busy key costs the database about this many takes a second.
BATCHES_PER_SECOND = 20


class SharedBuckets:
    """A bucket per key in the database, shared by every replica (PostgreSQL).

    A replica holds the few tokens of its last batch in memory and asks the database for
    the next batch only when they are spent, so a request costs a statement only once per
    batch. A key refused stays refused here until the database said it would refill.
    """

    def __init__(
        self,
        db: Database,
        rate: float,
        burst: float,
        *,
        namespace: str,
        clock: Clock = time.monotonic,
    ) -> None:
        self.db = db
        self.rate = rate
        self.burst = burst
        self.namespace = namespace
        self.batch = max(1, math.ceil(rate / BATCHES_PER_SECOND))
        self._clock = clock
        self._held: dict[str, int] = {}
        self._refused_until: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self.rate > 0

    async def _fetch(self, key: str, want: int) -> budgets.Taken:
        taken = await self.db.transact(
            lambda tx: budgets.take(
                tx.conn,
                key=f"{self.namespace}:{key}",
                rate=self.rate,
                burst=self.burst,
                want=want,
            )
        )
        self._held[key] = self._held.get(key, 0) + taken.tokens
        return taken

    def _from_held(self, key: str, count: int) -> bool:
        held = self._held.get(key, 0)
        if held < count:
            return False
        self._held[key] = held - count
        return True

    async def acquire(self, key: str) -> int | None:
        """Take one token for ``key``; None if allowed, else whole seconds to wait."""
        if not self.enabled or self._from_held(key, 1):
            return None
        refused = self._refused_until.get(key, 0.0) - self._clock()
        if refused > 0:
            return whole_seconds(refused)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._from_held(key, 1):
                return None
            taken = await self._fetch(key, self.batch)
            if self._from_held(key, 1):
                return None
            self._refused_until[key] = self._clock() + taken.wait
            return whole_seconds(taken.wait)

    async def take(self, key: str, count: int = 1) -> None:
        """Wait until ``count`` tokens (at most the burst) are taken for ``key``; callers
        of one replica are served one at a time, in turn."""
        count = max(1, min(count, math.floor(self.burst)))
        async with self._locks.setdefault(key, asyncio.Lock()):
            while not self._from_held(key, count):
                missing = count - self._held.get(key, 0)
                taken = await self._fetch(key, max(self.batch, missing))
                if not taken.tokens:
                    await asyncio.sleep(max(taken.wait, 1 / self.rate))


class SharedBucket:
    """One key of ``SharedBuckets``, awaited like a ``TokenBucket`` (``take``)."""

    def __init__(self, buckets: SharedBuckets, key: str) -> None:
        self._buckets = buckets
        self._key = key

    async def take(self, count: float = 1) -> None:
        await self._buckets.take(self._key, math.ceil(count))
