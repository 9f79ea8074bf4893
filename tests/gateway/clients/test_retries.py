"""The one retry loop of outbound calls, and its backoff."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clients.http import ProviderError, Unanswered, backoff, with_retries
from tests.support.sync import run


class Calls:
    """A call that fails with ``errors`` in turn, then answers "done"."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.count = 0

    async def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def busy(retry_after: float | None = 0.0) -> ProviderError:
    return ProviderError("busy", retryable=True, status=503, retry_after=retry_after)


def test_retryable_failures_are_tried_again_up_to_the_attempts() -> None:
    """Two 503s then an answer: three calls; four 503s with three attempts: the third raises."""
    calls = Calls(busy(), busy())
    assert run(with_retries(calls, attempts=3)) == "done"
    assert calls.count == 3
    failing = Calls(busy(), busy(), busy(), busy())
    with pytest.raises(ProviderError):
        run(with_retries(failing, attempts=3))
    assert failing.count == 3


def test_a_final_failure_is_not_repeated() -> None:
    """A 4xx (not retryable) raises at once."""
    calls = Calls(ProviderError("refused", retryable=False, status=400))
    with pytest.raises(ProviderError, match="refused"):
        run(with_retries(calls, attempts=5))
    assert calls.count == 1


def test_an_admin_waiting_gets_the_longer_of_backoff_and_retry_after() -> None:
    """Without a budget the wait is at least the server's Retry-After (two waits of 0.3 s
    are taken), and a Retry-After beyond twice the cap ends the retries at once."""
    calls = Calls(busy(retry_after=0.3), busy(retry_after=0.3))
    assert run(with_retries(calls, attempts=3, base=0.01, cap=0.2)) == "done"
    assert calls.count == 3
    too_long = Calls(busy(retry_after=5.0))
    with pytest.raises(ProviderError):
        run(with_retries(too_long, attempts=5, base=0.01, cap=0.2))
    assert too_long.count == 1


def test_a_job_with_a_budget_stops_when_the_waits_would_pass_it() -> None:
    """With a budget, a Retry-After longer than what is left raises without sleeping it;
    short ones are honoured as sent, however many fit."""
    calls = Calls(busy(retry_after=60.0))
    with pytest.raises(ProviderError):
        run(with_retries(calls, attempts=5, budget=1.0))
    assert calls.count == 1
    quick = Calls(busy(retry_after=0.0), busy(retry_after=0.0), busy(retry_after=0.0))
    assert run(with_retries(quick, attempts=4, base=10.0, cap=10.0, budget=1.0)) == "done"
    assert quick.count == 4


def test_the_caller_decides_what_is_tried_again() -> None:
    """A call that creates something is not sent again after no answer came."""
    calls = Calls(Unanswered("timed out", retryable=True))

    def again(exc: ProviderError) -> bool:
        return exc.retryable and not isinstance(exc, Unanswered)

    with pytest.raises(Unanswered):
        run(with_retries(calls, attempts=5, again=again))
    assert calls.count == 1


@given(
    attempt=st.integers(min_value=1, max_value=40),
    base=st.floats(min_value=0.01, max_value=10),
    cap=st.floats(min_value=0.01, max_value=3600),
)
def test_backoff_waits_between_half_and_all_of_its_ceiling(
    attempt: int, base: float, cap: float
) -> None:
    """Each wait lies in [c/2, c] with c = min(cap, base * 2^(n-1)), as documented."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= backoff(attempt, base=base, cap=cap) <= ceiling
