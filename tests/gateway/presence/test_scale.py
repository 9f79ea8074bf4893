"""End to end at the scale the issue names: 10,000 users watched by 16 monitors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import user_body
from tests.gateway.presence.conftest import TENANT, TeamsStack
from tests.support.waiting import eventually

USERS = 10_000
MONITORS = 16


def _provision(stack: TeamsStack, count: int) -> list[str]:
    """``count`` users through SCIM (as Entra sends them, concurrently) and in the tenant."""
    keys = stack.api("POST", "/integrations/azure_ad_sync/keys").json()
    path = keys["tenant_url"].removeprefix(stack.url) + "/Users"
    headers = {"Authorization": f"Bearer {keys['secret_token']}"}

    def create(n: int) -> str:
        body = user_body(f"s{n}")
        answer = stack.http.post(path, json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        email: str = body["emails"][0]["value"]
        return email

    with ThreadPoolExecutor(16) as pool:
        emails = list(pool.map(create, range(count)))
    for email in emails:
        stack.microsoft.add_user(TENANT, email)
    return emails


def test_ten_thousand_users_over_sixteen_monitors(teams_stack: TeamsStack) -> None:
    """Every user lands on one of 16 subscriptions (≤ 650 each), a Teams change reaches the
    feed, and sync all reads everyone back."""
    emails = _provision(teams_stack, USERS - 3)
    assert teams_stack.set_teams().status_code == 200
    for n in range(MONITORS):
        upn = f"monitor{n}@contoso.example"
        teams_stack.microsoft.add_user(TENANT, upn)
        added = teams_stack.api("POST", "/presence/monitors", json={"upn": upn}).json()
        assert teams_stack.sign_in(added["authorize_url"]).status_code == 200

    def all_subscribed() -> bool:
        listing: dict[str, Any] = teams_stack.monitors()
        return listing["users_watched"] == USERS and all(
            m["status"] == "subscribed" for m in listing["items"]
        )

    try:
        eventually(all_subscribed, timeout=240, what="10,000 users watched")
    except AssertionError:
        print("MONITORS", teams_stack.monitors())
        raise
    listing = teams_stack.monitors()
    assert listing["monitors_needed"] == MONITORS
    assert listing["warning"] is None
    assert max(m["users"] for m in listing["items"]) <= 650
    subscriptions = teams_stack.microsoft.subscriptions()
    assert len(subscriptions) == MONITORS
    covered = sum(s["resource"].count("'") // 2 for s in subscriptions)
    assert covered == USERS
    target = emails[USERS // 2]
    user_id = teams_stack.microsoft.user(target)["id"]
    teams_stack.microsoft.set_teams_presence(user_id, "Busy", "InAConferenceCall")
    eventually(
        lambda: (
            (
                teams_stack.api("GET", f"/presence/{target}").json()["sources"].get("teams") or {}
            ).get("activity")
            == "InAConferenceCall"
        ),
        what="the Teams change of one user among 10,000",
    )
    assert teams_stack.api("POST", "/presence/sync").status_code == 202
    eventually(
        lambda: teams_stack.api("GET", "/presence/sync").json()["done"],
        timeout=120,
        what="sync all of 10,000 users",
    )
