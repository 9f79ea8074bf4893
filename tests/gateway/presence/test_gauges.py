"""The presence monitors' gauges: counts by status and the soonest subscription end, read
from the monitors of the accounts that bring Teams presence in, and shown on /metrics."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from gateway.accounts.models import TEAMS
from gateway.outbox import worker
from gateway.presence.gauges import STATUSES, read_gauges, refresh_gauges
from observability.metrics import Metrics
from storage.engine import Database
from storage.tables import ACCOUNTS, INTEGRATIONS, PRESENCE_MONITORS, utcnow
from storage.transaction import Transaction
from tests.gateway.presence.conftest import CLIENT_SECRET, TENANT, TeamsStack
from tests.gateway.presence.test_monitors import MONITOR
from tests.support.sync import run
from tests.support.waiting import eventually

MONITORS = "cloudlink_gateway_presence_monitors"
EXPIRY = "cloudlink_gateway_presence_subscription_expiry_seconds"


def _account(
    db: Database,
    monitors: list[tuple[str, float | None]],
    *,
    teams: dict[str, Any] | None,
    integration_status: str = "active",
) -> None:
    """An account with a Teams integration of ``teams`` settings (none when None) and
    monitors of ``(status, subscription end)``."""
    account_id = str(uuid.uuid4())

    def work(tx: Transaction) -> None:
        now = utcnow()
        tx.conn.execute(
            insert(ACCOUNTS).values(id=account_id, name="a", created_at=now, updated_at=now)
        )
        if teams is not None:
            tx.conn.execute(
                insert(INTEGRATIONS).values(
                    id=str(uuid.uuid4()),
                    account_id=account_id,
                    kind=TEAMS,
                    status=integration_status,
                    config=teams,
                    secret="sealed",
                    created_at=now,
                    updated_at=now,
                )
            )
        for n, (status, expires_at) in enumerate(monitors):
            tx.conn.execute(
                insert(PRESENCE_MONITORS).values(
                    id=str(uuid.uuid4()),
                    account_id=account_id,
                    upn=f"monitor{n}@{account_id}.example",
                    status=status,
                    users=3,
                    resync_needed=False,
                    subscription_expires_at=expires_at,
                    created_at=now,
                    updated_at=now,
                )
            )

    run(db.transact(work))


def test_monitors_are_counted_by_status_with_the_soonest_subscribed_end(db: Database) -> None:
    """Every status is counted (0 when none); the soonest end is a subscribed monitor's,
    not the stale end a signed-out monitor keeps; accounts that do not bring Teams
    presence in (turned off, integration removed or unfinished) are left out."""
    now = time.time()
    _account(
        db,
        [
            ("not_authorized", None),
            ("not_authorized", now - 4000),
            ("subscribed", now + 3000),
            ("subscribed", now + 600),
            ("needs_update", now - 100),
        ],
        teams={"presence_from_teams": True},
    )
    # Settings saved before the toggle existed bring presence in.
    _account(db, [("subscribed", now + 1200)], teams={"name": "Teams"})
    _account(
        db,
        [("not_authorized", None), ("subscribed", now - 500)],
        teams={"presence_from_teams": False},
    )
    _account(db, [("subscribed", now - 1000)], teams=None)
    _account(db, [("needs_update", None)], teams={}, integration_status="setup_incomplete")

    found = run(db.query(read_gauges))

    assert found.by_status == {
        "not_authorized": 2,
        "authorized": 0,
        "subscribed": 3,
        "needs_update": 1,
    }
    assert found.soonest_expiry == pytest.approx(now + 600)


def test_without_monitors_every_status_is_zero_and_no_subscription_ends(db: Database) -> None:
    """The gauges show every status at 0 and an end that never comes (+Inf)."""
    _account(db, [], teams={"presence_from_teams": True})
    metrics = Metrics()
    run(db.query(refresh_gauges, metrics))
    for status in STATUSES:
        assert metrics.registry.get_sample_value(MONITORS, {"status": status}) == 0
    assert metrics.registry.get_sample_value(EXPIRY) == math.inf


def test_the_gauges_show_seconds_left_and_negative_once_a_subscription_lapsed(
    db: Database,
) -> None:
    """Seconds until the end, counted at the reading; below 0 when it passed unrenewed."""
    now = time.time()
    _account(db, [("authorized", None)], teams={"presence_from_teams": True})
    _account(db, [("subscribed", now - 120)], teams={"presence_from_teams": True})
    metrics = Metrics()
    run(db.query(refresh_gauges, metrics))
    assert metrics.registry.get_sample_value(MONITORS, {"status": "authorized"}) == 1
    assert metrics.registry.get_sample_value(MONITORS, {"status": "subscribed"}) == 1
    left = metrics.registry.get_sample_value(EXPIRY)
    assert left is not None
    assert -125 < left <= -120


# -- on a running gateway -------------------------------------------------------------


def _scrape(stack: TeamsStack) -> tuple[dict[str, float], float | None]:
    """The monitors by status and the expiry, as /metrics shows them."""
    text = stack.http.get("/metrics").text
    by_status: dict[str, float] = {}
    expiry: float | None = None
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == MONITORS:
                by_status[found.labels["status"]] = found.value
            elif found.name == EXPIRY:
                expiry = found.value
    return by_status, expiry


def _showing(stack: TeamsStack, expected: dict[str, float], low: float, high: float) -> bool:
    by_status, expiry = _scrape(stack)
    zeros = dict.fromkeys(STATUSES, 0.0)
    return by_status == {**zeros, **expected} and expiry is not None and low <= expiry <= high


def _monitor(stack: TeamsStack) -> dict[str, Any]:
    items: list[dict[str, Any]] = stack.monitors()["items"]
    return items[0]


@pytest.fixture
def quick_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker reads its gauges every tenth of a second instead of every few."""
    monkeypatch.setattr(worker, "BACKLOG_EVERY", 0.1)


@pytest.mark.usefixtures("quick_gauges")
def test_metrics_follow_a_monitor_from_added_to_subscribed_to_needs_update_to_deleted(
    teams_stack: TeamsStack,
) -> None:
    """/metrics shows the monitor in its status as it changes, and its subscription's time
    left (Graph grants 55 minutes) only while it is subscribed."""
    assert teams_stack.set_teams().status_code == 200
    eventually(
        lambda: _showing(teams_stack, {}, math.inf, math.inf),
        what="every status at 0 and no subscription ending",
    )

    teams_stack.microsoft.add_user(TENANT, MONITOR)
    added = teams_stack.api("POST", "/presence/monitors", json={"upn": MONITOR})
    assert added.status_code == 201, added.text
    eventually(
        lambda: _showing(teams_stack, {"not_authorized": 1}, math.inf, math.inf),
        what="the monitor counted as not_authorized until it signs in",
    )

    assert teams_stack.sign_in(added.json()["authorize_url"]).status_code == 200
    eventually(
        lambda: _monitor(teams_stack)["status"] == "subscribed",
        what="the monitor subscribed",
    )
    eventually(
        lambda: _showing(teams_stack, {"subscribed": 1}, 50 * 60, 55 * 60),
        what="one subscribed monitor, its subscription ending in about 55 minutes",
    )

    other_client = "0f0f0f0f-2222-4333-8444-555566667777"
    teams_stack.microsoft.add_app(TENANT, other_client, CLIENT_SECRET)
    assert teams_stack.set_teams(client_id=other_client).status_code == 200
    eventually(
        lambda: _showing(teams_stack, {"needs_update": 1}, math.inf, math.inf),
        what="the monitor counted as needs_update, no subscription counted",
    )

    monitor_id = _monitor(teams_stack)["id"]
    assert teams_stack.api("DELETE", f"/presence/monitors/{monitor_id}").status_code == 204
    eventually(
        lambda: _showing(teams_stack, {}, math.inf, math.inf),
        what="the deleted monitor no longer counted",
    )
