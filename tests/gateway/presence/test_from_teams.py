"""Teams → CloudLink: what one notification POST stores, and the directory following
provisioning."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.microsoft_graph import notification_item
from tests.gateway.presence.conftest import CLIENT_ID, TENANT, USERS, TeamsStack
from tests.gateway.presence.test_monitors import subscribed_monitor
from tests.support.waiting import eventually


def _rich_post(
    stack: TeamsStack, states: list[tuple[str, tuple[str, str]]], *, client_id: str = CLIENT_ID
) -> dict[str, Any]:
    """A notification POST as Graph sends it: one encrypted item per ``(email, state)``."""
    graph = stack.microsoft.graph
    subscription = next(iter(graph._subscriptions.values()))
    assert subscription.certificate is not None
    items = [
        notification_item(subscription, stack.teams_ids[email], state) for email, state in states
    ]
    return {"value": items, "validationTokens": [graph.engine.validation_token(TENANT, client_id)]}


def _teams_states(stack: TeamsStack, email: str) -> list[str]:
    return [
        e["data"]["availability"]
        for e in stack.feed()
        if e["type"] == "presence.changed"
        and e["data"]["source"] == "teams"
        and e["data"]["email"] == email
    ]


def test_items_of_one_post_are_stored_in_their_order(teams_stack: TeamsStack) -> None:
    """Two changes of one user in a POST: two events, in order; the last one stays. The
    same POST again (Graph retrying) adds nothing."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    user = USERS[0]
    before = _teams_states(teams_stack, user)
    post = _rich_post(
        teams_stack,
        [
            (user, ("Busy", "InACall")),
            (USERS[1], ("Away", "Away")),
            (user, ("DoNotDisturb", "Presenting")),
        ],
    )
    assert teams_stack.http.post("/webhooks/graph/notifications", json=post).status_code == 202
    assert _teams_states(teams_stack, user)[len(before) :] == ["Busy", "DoNotDisturb"]
    check = teams_stack.api("GET", f"/presence/{user}").json()
    assert check["sources"]["teams"]["activity"] == "Presenting"
    assert check["combined"]["availability"] == "DoNotDisturb"
    events = len(teams_stack.feed())
    assert teams_stack.http.post("/webhooks/graph/notifications", json=post).status_code == 202
    assert len(teams_stack.feed()) == events


def test_tokens_for_another_app_do_not_ride_on_verified_ones(teams_stack: TeamsStack) -> None:
    """Validation tokens are remembered only as the exact tokens that verified: a POST
    whose token names another app is not trusted, and its users are read back from
    Graph instead."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    user = USERS[2]
    good = _rich_post(teams_stack, [(user, ("Away", "Away"))])
    assert teams_stack.http.post("/webhooks/graph/notifications", json=good).status_code == 202
    assert _teams_states(teams_stack, user)[-1] == "Away"
    teams_stack.microsoft.set_teams_presence(teams_stack.teams_ids[user], "Busy", "InACall")
    eventually(lambda: _teams_states(teams_stack, user)[-1] == "Busy", what="Teams' change")
    forged = _rich_post(
        teams_stack, [(user, ("DoNotDisturb", "Presenting"))], client_id="not-our-app"
    )
    assert teams_stack.http.post("/webhooks/graph/notifications", json=forged).status_code == 202
    # Read back: Teams still says Busy, so no DoNotDisturb is ever stored.
    reads = [path for _, path in teams_stack.microsoft.requests if "getPresencesByUserId" in path]
    eventually(
        lambda: (
            len([p for _, p in teams_stack.microsoft.requests if "getPresencesByUserId" in p])
            > len(reads)
        ),
        what="the user read back",
    )
    check = teams_stack.api("GET", f"/presence/{user}").json()
    assert check["sources"]["teams"]["availability"] == "Busy"
    assert "DoNotDisturb" not in _teams_states(teams_stack, user)


def _watched(stack: TeamsStack) -> int:
    items: list[dict[str, Any]] = stack.monitors()["items"]
    return int(items[0]["users"])


def _subscribed_ids(stack: TeamsStack) -> str:
    subscriptions = stack.microsoft.subscriptions()
    return str(subscriptions[0]["resource"]) if subscriptions else ""


@pytest.mark.slow
def test_the_directory_follows_provisioning(teams_stack: TeamsStack) -> None:
    """Users provisioned, deactivated or deleted after the monitor subscribed are taken in
    or let go within seconds (the directory runs once provisioning settles, not at its
    next periodic run)."""
    assert teams_stack.set_teams().status_code == 200
    subscribed_monitor(teams_stack)
    added = teams_stack.add_user(4)

    def scim_id(email: str) -> str:
        found = teams_stack.scim("GET", params={"filter": f'userName eq "{email}"'}).json()
        return str(found["Resources"][0]["id"])

    deactivate = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    answer = teams_stack.scim("PATCH", f"/{scim_id(USERS[0])}", json=deactivate)
    assert answer.status_code == 200
    assert teams_stack.scim("DELETE", f"/{scim_id(USERS[1])}").status_code == 204

    def followed() -> bool:
        watched = _subscribed_ids(teams_stack)
        return (
            _watched(teams_stack) == 2
            and teams_stack.teams_ids[added] in watched
            and teams_stack.teams_ids[USERS[2]] in watched
            and teams_stack.teams_ids[USERS[0]] not in watched
            and teams_stack.teams_ids[USERS[1]] not in watched
        )

    eventually(followed, timeout=60, what="the subscription following provisioning")
