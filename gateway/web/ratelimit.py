"""Per-key token buckets, in process memory (``gateway.outbox.throttle``'s bucket).

They protect the store from one account's burst (Entra's initial cycle) without
punishing the others, and slow a client that keeps presenting wrong tokens. Off when the
rate is 0. They answer how long to wait, so the caller can send ``Retry-After``, which
Entra honours. At most ``max_keys`` buckets are held: keys a caller chooses (its
address) must not grow the process without bound; the least recently used bucket is
forgotten first, unless it still holds its key back.
"""

from __future__ import annotations

import itertools
import time
from typing import Protocol

from gateway.outbox.throttle import Clock, TokenBucket, whole_seconds

DEFAULT_MAX_KEYS = 100_000
# Buckets looked at, oldest first, for one that can be forgotten when the table is full.
EVICTION_SCAN = 64


class RateLimiter:
    """Allows ``rate`` requests per second per key, with bursts up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Clock = time.monotonic,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self.rate > 0

    def _bucket(self, key: str) -> TokenBucket:
        """The key's bucket, marked as the most recently used."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self._clock)
            if len(self._buckets) >= self.max_keys:
                self._forget_one()
        self._buckets[key] = bucket
        return bucket

    def _forget_one(self) -> None:
        """Make room: the least recently used bucket that holds nothing back (full again),
        among the oldest few; the oldest of all when each of those still holds a key back.

        Forgetting a bucket that holds a key back would let that key start afresh, so a
        caller cannot clear its own count by sending requests under many other keys,
        unless it keeps every one of the oldest buckets spent as well.
        """
        for key, bucket in itertools.islice(self._buckets.items(), EVICTION_SCAN):
            if bucket.full:
                del self._buckets[key]
                return
        del self._buckets[next(iter(self._buckets))]

    def acquire(self, key: str) -> int | None:
        """Take one token for ``key``; None if allowed, else seconds to wait before retrying."""
        if not self.enabled:
            return None
        bucket = self._bucket(key)
        if bucket.try_take():
            return None
        return whole_seconds(bucket.wait_for())

    def blocked(self, key: str) -> int | None:
        """Seconds ``key`` must wait before its next try, taking nothing; None when it may
        go ahead. A key never seen is not stored."""
        if not self.enabled or key not in self._buckets:
            return None
        wait = self._bucket(key).wait_for()
        return whole_seconds(wait) if wait > 0 else None

    def __len__(self) -> int:
        return len(self._buckets)


class AccountLimit(Protocol):
    """The SCIM limit of an account: in this process (``LocalLimit``), or shared by every
    replica through the database (``gateway.outbox.throttle.SharedBuckets``)."""

    async def acquire(self, key: str) -> int | None:
        """None if allowed, else whole seconds to wait before retrying."""
        ...


class LocalLimit:
    """A ``RateLimiter`` as an ``AccountLimit`` (the embedded default: one machine, its
    worker processes each taking a share of the limit)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def acquire(self, key: str) -> int | None:
        return self.limiter.acquire(key)
