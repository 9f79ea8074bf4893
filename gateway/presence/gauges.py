"""The presence monitors' gauges: how many are in each status, and how soon the first
subscription ends.

``refresh_gauges`` is one grouped read of the monitors, run by the outbox worker every few
seconds with its backlog gauges (``app.py`` hands it over), never per request. Only the
monitors of accounts that bring Teams presence in are counted: an account that turned
Teams → CloudLink off, or removed its Teams integration, keeps its monitors but runs no
upkeep for them, so their subscriptions lapse on purpose and their statuses call for no
action.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, select, true

from gateway.accounts.models import TEAMS
from gateway.accounts.providers import ACTIVE
from gateway.presence.monitors import AUTHORIZED, NOT_AUTHORIZED, SUBSCRIBED
from gateway.presence.teams import NEEDS_UPDATE
from observability.metrics import Metrics
from storage.tables import INTEGRATIONS, PRESENCE_MONITORS

STATUSES = (NOT_AUTHORIZED, AUTHORIZED, SUBSCRIBED, NEEDS_UPDATE)

_BRINGS_PRESENCE_IN = func.coalesce(
    INTEGRATIONS.c.config["presence_from_teams"].as_boolean(), true()
)
_READ = (
    select(
        PRESENCE_MONITORS.c.status,
        func.count().label("monitors"),
        func.min(PRESENCE_MONITORS.c.subscription_expires_at).label("soonest_expiry"),
    )
    .join(
        INTEGRATIONS,
        and_(
            INTEGRATIONS.c.account_id == PRESENCE_MONITORS.c.account_id,
            INTEGRATIONS.c.kind == TEAMS,
            INTEGRATIONS.c.status == ACTIVE,
        ),
    )
    .where(_BRINGS_PRESENCE_IN)
    .group_by(PRESENCE_MONITORS.c.status)
)


@dataclass(frozen=True)
class MonitorGauges:
    """The monitors in service by status (every status, 0 when none), and when the
    soonest subscription of a subscribed monitor ends (epoch seconds; None without one)."""

    by_status: dict[str, int]
    soonest_expiry: float | None


def read_gauges(conn: Connection) -> MonitorGauges:
    """The counts and the soonest expiry, in one grouped read of the monitors."""
    by_status = dict.fromkeys(STATUSES, 0)
    soonest: float | None = None
    for row in conn.execute(_READ):
        # The label keeps to the statuses this code knows and sets at every reading: a
        # label set once and never again would keep its last count.
        if row.status in by_status:
            by_status[row.status] = int(row.monitors)
        # Other statuses may keep the end of a subscription they no longer hold.
        if row.status == SUBSCRIBED and row.soonest_expiry is not None:
            soonest = float(row.soonest_expiry)
    return MonitorGauges(by_status, soonest)


def refresh_gauges(conn: Connection, metrics: Metrics) -> None:
    """Set ``presence_monitors`` and ``presence_subscription_expiry_seconds`` from a read."""
    found = read_gauges(conn)
    for status, count in found.by_status.items():
        metrics.presence_monitors.labels(status).set(count)
    metrics.presence_subscription_expiry.set(
        math.inf if found.soonest_expiry is None else found.soonest_expiry - time.time()
    )
