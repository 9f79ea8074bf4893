"""How long a kind of outbox row keeps trying, and how long it waits in between.

The engine knows no kind: each feature gives its handlers a ``RetryPolicy`` (messaging's
sends and event deliveries in ``gateway.delivery.handlers``, presence's jobs in
``gateway.presence.jobs``). A policy is either a backoff (waits doubling from ``base``
up to ``cap``) or a fixed ``schedule``; either way a provider's ``Retry-After`` is
honoured, up to a day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.clients.http import backoff

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
