"""End to end at scale: 10,000 users watched by 16 monitors.

On the embedded default only: the run takes a minute or more, most of it provisioning;
the same paths run on PostgreSQL in the other presence tests and in
``bench/presence.py``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import user_body
from tests.fakes.microsoft import FakeMicrosoft
from tests.gateway.presence.conftest import TENANT, TeamsStack, process_stack, provision
from tests.support.databases import sqlite_url
from tests.support.waiting import eventually

# Ten thousand users: minutes, more on a machine busy with the rest of the suite (the
# suite's 300 s would cut it short there).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

USERS = 10_000


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (see the module's docstring)."""
    return sqlite_url(tmp_path)


MONITORS = 16


def _provision(stack: TeamsStack, count: int) -> list[str]:
    """``count`` users through SCIM (as Entra sends them, concurrently) and in the tenant."""

    def create(n: int) -> str:
        body = user_body(f"s{n}")
        answer = stack.scim("POST", json=body)
        assert answer.status_code == 201, answer.text
        email: str = body["emails"][0]["value"]
        return email

    with ThreadPoolExecutor(16) as pool:
        emails = list(pool.map(create, range(count)))
    for email in emails:
        stack.microsoft.add_user(TENANT, email)
    return emails


@pytest.fixture
def scale_env(process_env: dict[str, str]) -> dict[str, str]:
    """The process of the presence tests, with the default lease: a directory run looks up
    2,000 users, which a lease of seconds (there for takeover tests) cuts short on a
    loaded machine, and the run then waits its ten minutes."""
    return {**process_env, "GATEWAY_OUTBOX_LEASE_SECONDS": "60"}


def test_ten_thousand_users_over_sixteen_monitors(
    scale_env: dict[str, str], microsoft: tuple[FakeMicrosoft, str], tmp_path: Path
) -> None:
    """Every user lands on one of 16 subscriptions (≤ 650 each), a Teams change reaches the
    feed, and sync all reads everyone back. The gateway runs in a process of its own, as in
    production: sharing one interpreter with thousands of test requests and the fake, its
    event loop could wait seconds for the GIL and miss Graph's 10 s validation limit."""
    log = tmp_path / "gateway.log"
    with process_stack(scale_env, microsoft, output=log) as teams_stack:
        provision(teams_stack)
        try:
            _ten_thousand(teams_stack)
        except BaseException:
            # What the gateway said of its jobs (warnings and errors) tells why, whether an
            # assertion failed or the test ran out of time.
            print("GATEWAY LOG", log.read_text()[-20_000:])
            raise


def _ten_thousand(teams_stack: TeamsStack) -> None:
    emails = _provision(teams_stack, USERS - 3)
    assert teams_stack.set_teams().status_code == 200
    for n in range(MONITORS):
        upn = f"monitor{n}@contoso.example"
        teams_stack.microsoft.add_user(TENANT, upn)
        added = teams_stack.api("POST", "/presence/monitors", json={"upn": upn})
        for _ in range(5):
            if added.status_code != 503:
                break
            time.sleep(float(added.headers.get("retry-after", "1")))
            added = teams_stack.api("POST", "/presence/monitors", json={"upn": upn})
        assert added.status_code == 201, added.text
        page = teams_stack.sign_in(added.json()["authorize_url"])
        for _ in range(5):
            # The database is busy taking in thousands of users: a person would retry.
            if page.status_code != 503:
                break
            time.sleep(float(page.headers.get("retry-after", "1")))
            page = teams_stack.sign_in(added.json()["authorize_url"])
        assert page.status_code == 200, page.text

    def all_subscribed() -> bool:
        listing: dict[str, Any] = teams_stack.monitors()
        return listing["users_watched"] == USERS and all(
            m["status"] == "subscribed" for m in listing["items"]
        )

    try:
        eventually(all_subscribed, timeout=300, what="10,000 users watched")
    except AssertionError:
        print("MONITORS", teams_stack.monitors())
        raise
    listing = teams_stack.monitors()
    assert listing["monitors_needed"] == MONITORS
    assert listing["warning"] is None
    assert max(m["users"] for m in listing["items"]) <= 650

    def covered() -> int:
        subscriptions = teams_stack.microsoft.subscriptions()
        return sum(s["resource"].count("'") // 2 for s in subscriptions) * (
            len(subscriptions) == MONITORS
        )

    # Monitors whose users moved replace their subscriptions: wait until every one settled.
    eventually(lambda: covered() == USERS, timeout=120, what="16 subscriptions for everyone")
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
