"""One token bucket: ``rate`` tokens a second, at most ``burst`` held.

It paces every caller that must stay within a rate: the web layer's per-account SCIM
limit and its limit on wrong tokens (``gateway.web.ratelimit``, which answers how long
to wait), and Graph's presence budget per tenant (``gateway.presence.jobs.graph``, whose
jobs wait their turn). The clock is injectable so that tests need no sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

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
