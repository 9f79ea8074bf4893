"""A short-lived cache of what hot paths read again and again: channels and credentials.

Every Twilio webhook needs its channel and the account's Auth Token, every send the
account's provider credentials; reading them costs a trip to a database thread, queries
and a decryption, more than the rest of the work. The cache keeps them ``TTL`` seconds per
process. Its users make staleness harmless: a webhook for a channel deleted meanwhile is
refused inside its write transaction, a signature that does not match the cached token
is checked again against the stored one, a send refused for its credentials is retried.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")

TTL = 2.0
MAX_ENTRIES = 10_000


class TtlCache(Generic[V]):
    """Values by key for ``ttl`` seconds, at most ``size`` of them (least recent dropped)."""

    def __init__(self, ttl: float = TTL, size: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    async def get(self, key: str, load: Callable[[], Awaitable[V]], *, fresh: bool = False) -> V:
        """The cached value, or ``load()``'s (cached); ``fresh`` skips the cache."""
        now = time.monotonic()
        found = None if fresh else self._entries.get(key)
        if found is not None and found[0] > now:
            self._entries.move_to_end(key)
            return found[1]
        value = await load()
        self._entries[key] = (now + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value
