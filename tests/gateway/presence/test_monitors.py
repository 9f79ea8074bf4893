"""Teams → CloudLink: monitors sign in, subscribe for their users, and keep it up."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2
import pytest

from gateway.clients import graph as graph_client
from tests.gateway.presence.conftest import TENANT, USERS, TeamsStack
from tests.support.waiting import eventually

NUL = "\x00"
MONITOR = "monitor1@contoso.example"


def _monitor(stack: TeamsStack) -> dict[str, Any]:
    items: list[dict[str, Any]] = stack.monitors()["items"]
    return items[0]


def subscribed_monitor(stack: TeamsStack) -> dict[str, Any]:
    """Add the monitor, sign it in, and wait until its subscription covers the users."""
    stack.microsoft.add_user(TENANT, MONITOR)
    added = stack.api("POST", "/presence/monitors", json={"upn": MONITOR})
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["status"] == "not_authorized"
    page = stack.sign_in(body["authorize_url"])
    assert page.status_code == 200, page.text
    assert "authorized" in page.text
    eventually(
        lambda: _monitor(stack)["status"] == "subscribed" and _monitor(stack)["users"] == 3,
        what="the monitor subscribed for the three users",
    )
    return _monitor(stack)


def _teams_events(stack: TeamsStack) -> list[dict[str, Any]]:
    return [
        e
        for e in stack.feed()
        if e["type"] == "presence.changed" and e["data"]["source"] == "teams"
    ]


def test_a_signed_in_monitor_subscribes_and_teams_changes_reach_the_feed(
    teams_stack: TeamsStack,
) -> None:
    """Sign-in with PKCE, a subscription for the users, and a Teams change in the feed."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    subscriptions = teams_stack.microsoft.subscriptions()
    assert len(subscriptions) == 1
    assert subscriptions[0]["notificationUrl"].endswith("/webhooks/graph/notifications")
    listing = teams_stack.monitors()
    assert listing["users_monitorable"] == 3
    assert listing["monitors_needed"] == 1
    assert listing["warning"] is None
    user = teams_stack.teams_ids[USERS[1]]
    teams_stack.microsoft.set_teams_presence(user, "DoNotDisturb", "Presenting")
    eventually(
        lambda: any(
            e["data"]["email"] == USERS[1] and e["data"]["availability"] == "DoNotDisturb"
            for e in _teams_events(teams_stack)
        ),
        what="the Teams change in the feed",
    )
    check = teams_stack.api("GET", f"/presence/{USERS[1]}").json()
    assert check["sources"]["teams"]["activity"] == "Presenting"
    assert check["teams_raw"]["id"] == user


def test_a_state_written_into_teams_does_not_come_back(teams_stack: TeamsStack) -> None:
    """CloudLink → Teams → notification: stored as Teams' state, but no Teams event."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    before = len(_teams_events(teams_stack))
    answer = teams_stack.api(
        "POST", "/presence", json={"user": USERS[0], "availability": "Busy", "activity": "InACall"}
    )
    assert answer.status_code == 202
    eventually(
        lambda: (
            (
                teams_stack.api("GET", f"/presence/{USERS[0]}").json()["sources"].get("teams") or {}
            ).get("availability")
            == "Busy"
        ),
        what="Teams' state read back",
    )
    assert len(_teams_events(teams_stack)) == before


def test_a_dropped_subscription_is_recreated(teams_stack: TeamsStack) -> None:
    """A subscription Graph dropped silently is noticed at renewal and made again."""
    assert teams_stack.set_teams().status_code == 200
    first = subscribed_monitor(teams_stack)
    old = teams_stack.microsoft.subscriptions()[0]["id"]
    teams_stack.microsoft.drop_subscription(old)
    eventually(
        lambda: [s["id"] for s in teams_stack.microsoft.subscriptions()] not in ([], [old]),
        what="a new subscription",
    )
    assert _monitor(teams_stack)["id"] == first["id"]


def test_a_revoked_monitor_becomes_not_authorized(teams_stack: TeamsStack) -> None:
    """invalid_grant at the next refresh: the monitor shows not_authorized and why."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    teams_stack.microsoft.revoke_refresh_tokens(MONITOR)
    eventually(lambda: _monitor(teams_stack)["status"] == "not_authorized", what="not authorized")
    assert "invalid_grant" in (_monitor(teams_stack)["last_error"] or "")
    assert teams_stack.monitors()["warning"] is not None


def test_reauthorization_required_is_answered(teams_stack: TeamsStack) -> None:
    """A lifecycle event makes the upkeep run: the subscription is renewed and resynced."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    subscription = teams_stack.microsoft.subscriptions()[0]["id"]
    reads = sum(1 for _, path in teams_stack.microsoft.requests if "getPresencesByUserId" in path)
    status = asyncio.run(teams_stack.microsoft.send_lifecycle(subscription))
    assert status == 202
    eventually(
        lambda: (
            sum(1 for _, path in teams_stack.microsoft.requests if "getPresencesByUserId" in path)
            > reads
        ),
        what="a resync after the lifecycle event",
    )


def test_a_failed_validation_of_the_notification_url_is_tried_again(
    teams_stack: TeamsStack,
) -> None:
    """Graph could not validate the notification URL once (the gateway was too slow to
    answer): the create is tried again and the monitor subscribes, without an operator."""
    teams_stack.microsoft.graph.unanswered_validations = 1
    assert teams_stack.set_teams().status_code == 200
    monitor = subscribed_monitor(teams_stack)
    assert monitor["last_error"] is None
    failed, *passed = teams_stack.microsoft.graph.validations
    assert not failed["ok"]
    assert [v["ok"] for v in passed] == [True, True]
    # Retried as a failure that passes, not given up on.
    assert teams_stack.api("GET", "/dead-letters").json()["items"] == []


@pytest.mark.parametrize("stack_overrides", [{"outbound_timeout": 0.5}])
def test_a_subscription_answered_slowly_is_waited_for_and_made_once(
    teams_stack: TeamsStack,
) -> None:
    """Graph answers a create only after validating both URLs: the gateway waits longer
    than for other calls, instead of giving up and creating a second one."""
    teams_stack.microsoft.graph.create_latency = 1.5
    assert teams_stack.set_teams().status_code == 200
    monitor = subscribed_monitor(teams_stack)
    # One create: its notification and lifecycle URLs validated once each.
    assert len(teams_stack.microsoft.graph.validations) == 2
    assert monitor["last_error"] is None


@pytest.mark.parametrize("stack_overrides", [{"outbound_timeout": 0.5}])
def test_a_create_given_up_on_is_found_and_replaced(
    teams_stack: TeamsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create that got no answer may still be made: the next upkeep finds it (409),
    replaces it with one it knows, and the monitor ends with one subscription."""
    monkeypatch.setattr(graph_client, "SUBSCRIBE_TIMEOUT", 0.5)
    fake = teams_stack.microsoft
    fake.graph.create_latency = 2.0
    assert teams_stack.set_teams().status_code == 200
    fake.add_user(TENANT, MONITOR)
    added = teams_stack.api("POST", "/presence/monitors", json={"upn": MONITOR}).json()
    assert teams_stack.sign_in(added["authorize_url"]).status_code == 200
    eventually(lambda: len(fake.subscriptions()) == 1, what="the first create made in Graph")
    first = fake.subscriptions()[0]["id"]
    fake.graph.create_latency = 0.0
    eventually(
        lambda: _monitor(teams_stack)["status"] == "subscribed",
        what="the monitor subscribed",
    )
    live = [s["id"] for s in fake.subscriptions()]
    assert len(live) == 1
    assert live[0] != first
    assert _monitor(teams_stack)["last_error"] is None


@pytest.mark.parametrize("stack_overrides", [{"outbox_lease_seconds": 5.0}])
@pytest.mark.slow
def test_an_upkeep_cut_short_mid_refresh_keeps_the_new_refresh_token(
    teams_stack: TeamsStack,
) -> None:
    """The worker cuts a run short at 80 % of its lease (4 s here). A refresh answered
    later than that has already spent the old refresh token: the new one is stored all
    the same, and the monitor stays signed in once the answers are quick again."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    identity = teams_stack.microsoft.identity
    identity.refresh_latency = 4.5
    slow = identity.tokens_issued["refresh_token"]
    eventually(
        lambda: identity.tokens_issued["refresh_token"] >= slow + 2,
        timeout=30,
        what="two refreshes answered after the run was cut short",
    )
    identity.refresh_latency = 0.0
    quick = identity.tokens_issued["refresh_token"]
    eventually(
        lambda: (
            identity.tokens_issued["refresh_token"] > quick + 1
            and _monitor(teams_stack)["status"] == "subscribed"
            and _monitor(teams_stack)["last_error"] is None
        ),
        timeout=30,
        what="the monitor refreshing with the tokens kept, still subscribed",
    )


def test_a_sign_in_as_another_account_is_refused(teams_stack: TeamsStack) -> None:
    """The monitor's link signs in only its own UPN."""
    assert teams_stack.set_teams().status_code == 200
    added = teams_stack.api("POST", "/presence/monitors", json={"upn": "ghost@contoso.example"})
    assert added.status_code == 201
    page = teams_stack.sign_in(added.json()["authorize_url"])
    assert page.status_code == 400
    assert _monitor(teams_stack)["status"] == "not_authorized"


def test_a_sign_in_the_identity_platform_cannot_answer_is_a_503_to_retry(
    teams_stack: TeamsStack,
) -> None:
    """The platform answering 503 to the code's redemption is "try again" (503 page), the
    sign-in stays pending, and the same link then works."""
    assert teams_stack.set_teams().status_code == 200
    teams_stack.microsoft.add_user(TENANT, MONITOR)
    added = teams_stack.api("POST", "/presence/monitors", json={"upn": MONITOR})
    with httpx2.Client(timeout=10) as browser:
        to_microsoft = browser.get(added.json()["authorize_url"])
        callback = browser.get(to_microsoft.headers["location"]).headers["location"]
        assert callback.startswith(teams_stack.url + "/oauth/monitor?")
        teams_stack.microsoft.login_faults.fail_always(503)
        try:
            page = browser.get(callback)
        finally:
            teams_stack.microsoft.login_faults.recover()
        assert page.status_code == 503
        assert "could not be reached" in page.text
        assert _monitor(teams_stack)["status"] == "not_authorized"
        assert browser.get(callback).status_code == 200
    assert _monitor(teams_stack)["status"] in ("authorized", "subscribed")


def test_webhook_refuses_items_without_the_client_state(teams_stack: TeamsStack) -> None:
    """A forged notification (wrong clientState) is acknowledged and stores nothing."""
    assert teams_stack.set_teams().status_code == 200
    forged = {
        "value": [
            {
                "subscriptionId": "x",
                "clientState": "nobody.guess",
                "changeType": "updated",
                "resource": "communications/presences('abc')",
                "resourceData": {"id": "abc"},
            }
        ]
    }
    answer = teams_stack.http.post("/webhooks/graph/notifications", json=forged)
    assert answer.status_code == 202
    handshake = teams_stack.http.post(
        "/webhooks/graph/notifications", params={"validationToken": "a token+with spaces"}
    )
    assert handshake.status_code == 200
    assert handshake.text == "a token+with spaces"
    assert handshake.headers["content-type"].startswith("text/plain")
    assert teams_stack.http.post("/webhooks/graph/notifications", content=b"{").status_code == 400


def test_a_genuine_notification_holding_nul_is_taken(teams_stack: TeamsStack) -> None:
    """A notification with \\u0000 in its fields (its clientState right) is not refused:
    202, and the user it names is read back (decision 0015)."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    [subscription] = teams_stack.microsoft.subscriptions()
    reads = _reads(teams_stack)
    item = {
        "subscriptionId": subscription["id"] + NUL,
        "clientState": subscription["clientState"],
        "changeType": f"upd{NUL}ated",
        "tenantId": NUL,
        "resource": f"communications/presences('{teams_stack.teams_ids[USERS[1]]}')",
    }
    body = json.dumps({"value": [item]})
    assert "\\u0000" in body
    answer = teams_stack.http.post(
        "/webhooks/graph/notifications",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 202, answer.text
    eventually(lambda: _reads(teams_stack) > reads, what="the user read back")


def _reads(stack: TeamsStack) -> int:
    return sum(1 for _, path in stack.microsoft.requests if "getPresencesByUserId" in path)


def test_rich_notifications_carry_the_state_without_a_read_back(teams_stack: TeamsStack) -> None:
    """With resource data, the encrypted state is decrypted and stored; no read is needed."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    assert teams_stack.microsoft.subscriptions()[0]["includeResourceData"] is True
    reads = _reads(teams_stack)
    teams_stack.microsoft.set_teams_presence(teams_stack.teams_ids[USERS[2]], "Away", "Away")
    eventually(
        lambda: any(
            e["data"]["email"] == USERS[2] and e["data"]["availability"] == "Away"
            for e in _teams_events(teams_stack)
        ),
        what="the Teams change in the feed",
    )
    assert _reads(teams_stack) == reads


@pytest.mark.parametrize("stack_overrides", [{"presence_resource_data": False}])
def test_basic_notifications_are_read_back(teams_stack: TeamsStack) -> None:
    """Without resource data, a notification names the user and the state is read back."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    assert not teams_stack.microsoft.subscriptions()[0].get("includeResourceData")
    reads = _reads(teams_stack)
    teams_stack.microsoft.set_teams_presence(teams_stack.teams_ids[USERS[0]], "Busy", "InACall")
    eventually(
        lambda: any(
            e["data"]["email"] == USERS[0] and e["data"]["availability"] == "Busy"
            for e in _teams_events(teams_stack)
        ),
        what="the Teams change in the feed",
    )
    assert _reads(teams_stack) > reads


def test_a_rotated_certificate_replaces_the_subscription(teams_stack: TeamsStack) -> None:
    """When the certificate nears its end a new one is made; the subscription moves to it
    and notifications still decrypt."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    first = teams_stack.microsoft.subscriptions()[0]
    old_certificate = first["encryptionCertificateId"]
    teams_stack.sql(
        "UPDATE notification_certificates SET not_after = :soon",
        soon=time.time() + 3600,
    )
    eventually(
        lambda: (
            [s["encryptionCertificateId"] for s in teams_stack.microsoft.subscriptions()]
            not in ([], [old_certificate])
        ),
        what="a subscription with the new certificate",
    )
    assert len(teams_stack.sql("SELECT id FROM notification_certificates")) == 2
    teams_stack.microsoft.set_teams_presence(
        teams_stack.teams_ids[USERS[1]], "BeRightBack", "BeRightBack"
    )
    eventually(
        lambda: any(e["data"]["availability"] == "BeRightBack" for e in _teams_events(teams_stack)),
        what="a notification decrypted with the new certificate",
    )


def test_a_quick_change_back_in_cloudlink_reaches_teams(teams_stack: TeamsStack) -> None:
    """Busy then Available at once: Teams ends Available, not stuck on the call."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    user = USERS[0]
    for availability, activity in (("Busy", "InACall"), ("Available", "Available")):
        answer = teams_stack.api(
            "POST",
            "/presence",
            json={"user": user, "availability": availability, "activity": activity},
        )
        assert answer.status_code == 202
    eventually(
        lambda: (
            teams_stack.microsoft.presence(teams_stack.teams_ids[user])["availability"]
            == "Available"
        ),
        what="Teams showing Available",
    )


def test_a_real_teams_change_back_to_the_written_state_is_reported(
    teams_stack: TeamsStack,
) -> None:
    """The echo of a write is swallowed once; the user's own return to it later is news."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    user, teams_id = USERS[1], teams_stack.teams_ids[USERS[1]]
    assert (
        teams_stack.api(
            "POST",
            "/presence",
            json={"user": user, "availability": "Available", "activity": "Available"},
        ).status_code
        == 202
    )
    eventually(
        lambda: (
            (teams_stack.api("GET", f"/presence/{user}").json()["sources"].get("teams") or {}).get(
                "availability"
            )
            == "Available"
        ),
        what="the write's echo stored",
    )
    echoes = [e for e in _teams_events(teams_stack) if e["data"]["email"] == user]
    teams_stack.microsoft.set_teams_presence(teams_id, "DoNotDisturb", "Presenting")
    eventually(
        lambda: (
            len([e for e in _teams_events(teams_stack) if e["data"]["email"] == user]) > len(echoes)
        ),
        what="the meeting reported",
    )
    teams_stack.microsoft.set_teams_presence(teams_id, "Available", "Available")
    eventually(
        lambda: (
            [e for e in _teams_events(teams_stack) if e["data"]["email"] == user][-1]["data"][
                "availability"
            ]
            == "Available"
        ),
        what="the return to Available reported",
    )
