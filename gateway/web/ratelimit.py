"""A per-key token bucket, in process memory.

It protects the store from one account's burst (Entra's initial cycle) without
punishing the others, and slows a client that keeps failing to authenticate. Off when
the rate is 0. It answers how long to wait, so the caller can send ``Retry-After``,
which Entra honours. It holds at most ``max_keys`` buckets: keys a caller chooses (its
address) must not grow the process without bound; the least recently used bucket is
forgotten first, unless it still holds its key back.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_KEYS = 100_000
# Buckets looked at, oldest first, for one that can be forgotten when the table is full.
EVICTION_SCAN = 64


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``rate`` requests per second per key, with bursts up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self.rate > 0

    def _refilled(self, key: str) -> _Bucket:
        """The key's bucket, refilled up to now and marked as the most recently used."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            if len(self._buckets) >= self.max_keys:
                self._forget_one(now)
        self._buckets[key] = bucket
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket

    def _forget_one(self, now: float) -> None:
        """Make room: the least recently used bucket that holds nothing back (full again),
        among the oldest few; the oldest of all when each of those still holds a key back.

        Forgetting a bucket that holds a key back would let that key start afresh, so a
        caller cannot clear its own count by sending requests under many other keys,
        unless it keeps every one of the oldest buckets spent as well.
        """
        for key, bucket in itertools.islice(self._buckets.items(), EVICTION_SCAN):
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.burst:
                del self._buckets[key]
                return
        del self._buckets[next(iter(self._buckets))]

    def _wait(self, bucket: _Bucket) -> int:
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))

    def acquire(self, key: str) -> int | None:
        """Take one token for ``key``; None if allowed, else seconds to wait before retrying."""
        if not self.enabled:
            return None
        bucket = self._refilled(key)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return self._wait(bucket)

    def blocked(self, key: str) -> int | None:
        """Seconds ``key`` must wait before its next try, taking nothing; None when it may
        go ahead. A key never seen is not stored."""
        if not self.enabled or key not in self._buckets:
            return None
        bucket = self._refilled(key)
        return None if bucket.tokens >= 1 else self._wait(bucket)

    def __len__(self) -> int:
        return len(self._buckets)
