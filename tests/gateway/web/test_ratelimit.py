"""The per-account token bucket, on a fake clock."""

from __future__ import annotations

from gateway.web.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    """A burst is allowed, then one request per 1/rate seconds, with the wait announced."""
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("a") == 1
    clock.now = 0.5
    assert limiter.acquire("a") is None
    assert limiter.acquire("b") is None


def test_zero_rate_disables_the_limit() -> None:
    """Rate 0 means no limit at all."""
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.acquire("a") is None for _ in range(1000))


def test_blocked_says_how_long_a_spent_key_waits_and_stores_no_stranger() -> None:
    """Looking takes nothing; a key never seen is not stored; a spent one must wait."""
    clock = Clock()
    limiter = RateLimiter(rate=0.5, burst=2, clock=clock)
    assert limiter.blocked("stranger") is None
    assert len(limiter) == 0
    assert limiter.acquire("a") is None
    assert limiter.blocked("a") is None
    assert limiter.acquire("a") is None
    assert limiter.blocked("a") == 2
    clock.now = 2.0
    assert limiter.blocked("a") is None


def test_a_full_table_forgets_a_key_holding_nothing_back_before_a_held_one() -> None:
    """Beyond max_keys the least recently used bucket that is full again goes first, so a
    held-back key is not cleared by requests under other keys."""
    clock = Clock()
    limiter = RateLimiter(rate=0.001, burst=1, max_keys=3, clock=clock)
    for key in ("b", "c"):
        assert limiter.acquire(key) is None
    clock.now = 1500.0  # b and c are full again
    assert limiter.acquire("held") is None
    for key in ("d", "e"):
        assert limiter.acquire(key) is None
    assert limiter.blocked("held") is not None
    assert len(limiter) == 3


def test_when_every_key_is_held_back_the_oldest_is_forgotten() -> None:
    """The table stays bounded even when no bucket is full."""
    limiter = RateLimiter(rate=0.001, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        assert limiter.acquire(key) is None
    assert len(limiter) == 2
    assert limiter.acquire("a") is None
    assert limiter.acquire("c") is not None
