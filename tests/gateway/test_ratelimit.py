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


def test_failures_block_a_key_until_the_bucket_refills() -> None:
    """Spent failures block the key (with the wait announced) without blocking others."""
    clock = Clock()
    limiter = RateLimiter(rate=0.5, burst=2, clock=clock)
    assert limiter.blocked("a") is None
    limiter.spend("a")
    assert limiter.blocked("a") is None
    limiter.spend("a")
    assert limiter.blocked("a") == 2
    assert limiter.blocked("b") is None
    clock.now = 2.0
    assert limiter.blocked("a") is None


def test_a_key_never_seen_is_not_stored_and_buckets_are_bounded() -> None:
    """Looking up a stranger stores nothing; beyond max_keys the least recent is forgotten."""
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=3)
    assert limiter.blocked("stranger") is None
    assert len(limiter) == 0
    for key in ("a", "b", "c", "d"):
        limiter.spend(key)
    assert len(limiter) == 3
    assert limiter.blocked("a") is None  # forgotten: a fresh start
    assert limiter.blocked("d") == 1
