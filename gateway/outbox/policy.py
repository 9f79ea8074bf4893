"""How long each kind of delivery keeps trying, and how long it waits in between.

CloudLink events follow the schedule Standard Webhooks producers use: quick first
retries, then hours apart, about a day in all, so an endpoint that is down overnight
still gets everything. Provider sends retry for about half an hour: a customer waiting
for an answer is better told it failed than sent it a day late.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.clients.http import backoff
from gateway.settings import Settings

# Seconds to wait after attempt n (1-based) of an event delivery.
EVENT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
LONGEST_RETRY_AFTER = 86400.0


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts of one kind of row and the wait after each failed one.

    ``scale`` multiplies every wait (``GATEWAY_OUTBOX_RETRY_SCALE``), so that tests and
    the demo see a whole schedule in seconds.
    """

    attempts: int
    base: float = 2.0
    cap: float = 300.0
    schedule: tuple[float, ...] = ()
    scale: float = 1.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds until the next attempt, after ``attempt`` failed (jittered)."""
        if self.schedule:
            step = self.schedule[min(attempt, len(self.schedule)) - 1]
            wait = random.uniform(step * 0.8, step * 1.2)  # noqa: S311  (timing, not secrecy)
        else:
            wait = backoff(attempt, base=self.base, cap=self.cap)
        wait *= self.scale
        if retry_after is not None:
            wait = max(wait, min(retry_after, LONGEST_RETRY_AFTER))
        return wait


def policy_of(settings: Settings, name: str) -> RetryPolicy:
    """The policy of one kind of delivery, as the settings shape it: ``events`` (the
    Standard Webhooks schedule), ``sends`` (about half an hour) or ``upkeep`` (background
    work that keeps trying for hours)."""
    scale = settings.outbox_retry_scale
    if name == "events":
        attempts = settings.event_max_attempts
        return RetryPolicy(attempts=attempts, schedule=EVENT_SCHEDULE, scale=scale)
    if name == "sends":
        return RetryPolicy(attempts=settings.send_max_attempts, cap=600.0, scale=scale)
    if name == "upkeep":
        return RetryPolicy(attempts=10, base=5.0, cap=3600.0, scale=scale)
    raise ValueError(f"no retry policy named {name!r}")
