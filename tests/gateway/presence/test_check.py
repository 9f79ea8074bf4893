"""Verify configuration: the system check names what is wrong and what to do; sync all."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.gateway.presence.conftest import CLIENT_ID, CLIENT_SECRET, TENANT, USERS, TeamsStack
from tests.gateway.presence.test_monitors import subscribed_monitor
from tests.support.waiting import eventually


def _items(stack: TeamsStack) -> dict[str, dict[str, Any]]:
    answer = stack.api("GET", "/presence/check")
    assert answer.status_code == 200, answer.text
    return {item["name"]: item for item in answer.json()["items"]}


def test_a_healthy_configuration_passes_every_item(teams_stack: TeamsStack) -> None:
    """Token, permissions, secret expiry, monitors, subscriptions and the URL: all ok."""
    assert teams_stack.set_teams(secret_expires="2031-01-01").status_code == 200
    subscribed_monitor(teams_stack)
    answer = teams_stack.api("GET", "/presence/check").json()
    assert {item["name"]: item["status"] for item in answer["items"]} == {
        "token": "ok",
        "permissions": "ok",
        "secret_expiry": "ok",
        "monitors": "ok",
        "subscriptions": "ok",
        "notification_url": "ok",
    }
    assert answer["status"] == "ok"


def test_an_expired_client_secret_is_reported(teams_stack: TeamsStack) -> None:
    """Once the secret expires, the token item fails with Microsoft's code and the expiry
    item says to create a new secret."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert teams_stack.set_teams(secret_expires=yesterday).status_code == 200
    teams_stack.microsoft.add_app(
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        secret_expires=datetime.now(UTC) - timedelta(days=1),
    )
    items = _items(teams_stack)
    assert items["token"]["status"] == "error"
    assert "AADSTS7000222" in items["token"]["detail"]
    assert items["secret_expiry"]["status"] == "error"
    assert "new client secret" in items["secret_expiry"]["action"]


def test_missing_monitors_and_permissions_are_named(teams_stack: TeamsStack) -> None:
    """Users to watch and no monitor: an error saying to add one; a missing role too."""
    teams_stack.microsoft.add_app(
        TENANT, CLIENT_ID, CLIENT_SECRET, application_permissions=["User.Read.All"]
    )
    assert teams_stack.set_teams().status_code == 200
    items = _items(teams_stack)
    assert items["permissions"]["status"] == "error"
    assert "Presence.ReadWrite.All" in items["permissions"]["action"]
    assert items["secret_expiry"]["status"] == "warning"


def test_sync_all_reads_every_user_back(teams_stack: TeamsStack) -> None:
    """Sync all is accepted, shows progress, and ends with every monitor read back."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    reads = sum(1 for _, path in teams_stack.microsoft.requests if "getPresencesByUserId" in path)
    started = teams_stack.api("POST", "/presence/sync")
    assert started.status_code == 202, started.text
    assert started.json()["monitors"] == 1
    eventually(lambda: teams_stack.api("GET", "/presence/sync").json()["done"], what="synced")
    after = sum(1 for _, path in teams_stack.microsoft.requests if "getPresencesByUserId" in path)
    assert after > reads


@pytest.mark.parametrize("stack_overrides", [{"presence_upkeep_seconds": 300.0}])
def test_sync_all_reads_back_without_touching_the_monitors(teams_stack: TeamsStack) -> None:
    """One read per monitor with the app token, nothing else: a change Graph never sent
    (its subscription dropped) is found, and the monitor's subscription is left to its
    upkeep (no renewal, no new subscription)."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    # Jobs queued while the account was set up (directory, upkeep) run first: one running
    # late would renew the dropped subscription below and make a new one.
    eventually(
        lambda: (
            teams_stack.sql(
                "SELECT count(*) FROM outbox WHERE kind LIKE 'presence.%' AND status = 'pending' "
                "AND available_at < :soon",
                soon=time.time() + 30,
            )[0][0]
            == 0
        ),
        what="the set-up's presence jobs done",
    )
    fake = teams_stack.microsoft
    fake.drop_subscription(fake.subscriptions()[0]["id"])
    fake.set_teams_presence(teams_stack.teams_ids[USERS[2]], "DoNotDisturb", "Presenting")
    before, refreshes = len(fake.requests), fake.identity.tokens_issued["refresh_token"]
    assert teams_stack.api("POST", "/presence/sync").status_code == 202
    eventually(lambda: teams_stack.api("GET", "/presence/sync").json()["done"], what="synced")
    paths = [path for _, path in fake.requests[before:]]
    # The app token reads; no monitor signs in again.
    assert fake.identity.tokens_issued["refresh_token"] == refreshes
    assert sum("getPresencesByUserId" in path for path in paths) == 1
    assert not [path for path in paths if "/subscriptions" in path]
    teams = teams_stack.api("GET", f"/presence/{USERS[2]}").json()["sources"]["teams"]
    assert teams["availability"] == "DoNotDisturb"
    assert any(
        e["type"] == "presence.changed"
        and e["data"]["email"] == USERS[2]
        and e["data"]["availability"] == "DoNotDisturb"
        for e in teams_stack.feed()
    )


def test_a_read_back_given_up_on_shows_as_failed_until_the_next_sync(
    teams_stack: TeamsStack,
) -> None:
    """A monitor whose sync row was dead-lettered counts as failed (the sync is done, not
    successful); asking for sync all again replaces it with a new read-back."""
    assert teams_stack.set_teams().status_code == 200
    monitor = subscribed_monitor(teams_stack)
    teams_stack.sql(
        "INSERT INTO outbox (account_id, kind, target_id, payload, status, attempts, "
        "available_at, created_at, updated_at, last_error) VALUES (:account, "
        "'presence.sync', :monitor, '{}', 'dead', 4, 0, 0, 0, 'presence read: HTTP 503')",
        account=teams_stack.account_id,
        monitor=monitor["id"],
    )
    status = teams_stack.api("GET", "/presence/sync").json()
    assert (status["done"], status["monitors_failed"]) == (True, 1)
    assert teams_stack.api("POST", "/presence/sync").status_code == 202
    eventually(lambda: teams_stack.api("GET", "/presence/sync").json()["done"], what="synced")
    assert teams_stack.api("GET", "/presence/sync").json()["monitors_failed"] == 0


def test_without_teams_there_is_nothing_to_check(teams_stack: TeamsStack) -> None:
    """No Teams integration: 409 for the check and for sync all."""
    assert teams_stack.api("GET", "/presence/check").status_code == 409
    assert teams_stack.api("POST", "/presence/sync").status_code == 409
