"""The one token bucket, on a fake clock."""

from __future__ import annotations

import asyncio

from gateway.outbox.throttle import TokenBucket, whole_seconds
from tests.support.sync import run


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_starts_full_and_refills_at_its_rate_up_to_its_burst() -> None:
    """Three at once, then one every half second, never more than the burst held."""
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert bucket.full
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_for() == 0.5
    clock.now = 0.5
    assert bucket.try_take()
    clock.now = 100.0
    assert bucket.tokens == 3
    assert bucket.full


def test_spending_past_empty_stops_at_none() -> None:
    """A spend when nothing is held leaves none (a debt would punish later callers)."""
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
    bucket.spend()
    bucket.spend()
    assert bucket.tokens == 0
    assert bucket.wait_for() == 1.0


def test_take_waits_for_the_tokens_of_callers_beyond_the_burst() -> None:
    """Six callers of a bucket holding two: the four beyond it wait for the rate, and each
    gets its token (none is refused, none is served twice)."""

    async def scenario() -> tuple[int, float]:
        bucket = TokenBucket(rate=1000.0, burst=2)
        served: list[int] = []

        async def caller(n: int) -> None:
            await bucket.take()
            served.append(n)

        await asyncio.gather(*(caller(n) for n in range(6)))
        return len(set(served)), bucket.tokens

    served, left = run(scenario())
    assert served == 6
    assert left < 2


def test_a_wait_is_announced_in_whole_seconds_of_at_least_one() -> None:
    """Retry-After takes whole seconds: a fraction rounds up, nothing is below one."""
    assert [whole_seconds(w) for w in (0.0, 0.2, 1.0, 1.01)] == [1, 1, 1, 2]
