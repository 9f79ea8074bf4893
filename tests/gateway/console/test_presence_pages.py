"""The console's Teams and Office 365 pages on a live gateway wired to the fake identity
platform and Graph (the presence suite's stack: three users provisioned by SCIM)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from tests.gateway.console.conftest import sign_in
from tests.gateway.presence.conftest import CLIENT_ID, CLIENT_SECRET, TENANT, USERS, TeamsStack
from tests.support.waiting import eventually

MONITOR = "monitor@contoso.example"


@pytest.fixture
def browser(teams_stack: TeamsStack) -> Iterator[tuple[httpx2.Client, str, str]]:
    with httpx2.Client(base_url=teams_stack.url, follow_redirects=True, timeout=30) as client:
        csrf = sign_in(client)
        yield client, csrf, f"/admin/accounts/{teams_stack.account_id}"


def _settings(csrf: str, **extra: str) -> dict[str, str]:
    return {
        "csrf": csrf,
        "name": "Teams",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "presence_to_teams": "yes",
        "presence_from_teams": "yes",
        **extra,
    }


def test_teams_settings_are_checked_saved_and_their_expiry_warned(
    teams_stack: TeamsStack, browser: tuple[httpx2.Client, str, str]
) -> None:
    client, csrf, base = browser
    wrong = client.post(base + "/teams", data=_settings(csrf, client_secret="not-the-secret-00"))
    assert wrong.status_code in (409, 422)
    assert teams_stack.integration("microsoft_teams") is None
    soon = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    saved = client.post(base + "/teams", data=_settings(csrf, secret_expires=soon))
    assert "Settings saved." in saved.text
    assert "expires within 30 days" in saved.text
    assert CLIENT_SECRET not in saved.text
    item = teams_stack.integration("microsoft_teams")
    assert item is not None
    assert item["config"]["presence_to_teams"] is True
    past = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    expired = client.post(base + "/teams", data=_settings(csrf, secret_expires=past))
    assert "The client secret has expired" in expired.text


def test_a_monitor_is_added_authorized_and_checked_then_sync_all_runs(
    teams_stack: TeamsStack, browser: tuple[httpx2.Client, str, str]
) -> None:
    client, csrf, base = browser
    client.post(base + "/teams", data=_settings(csrf))
    page = client.get(base + "/teams")
    assert "monitors needed" in page.text
    teams_stack.microsoft.add_user(TENANT, MONITOR)
    added = client.post(base + "/teams/monitors", data={"csrf": csrf, "upn": MONITOR})
    link = added.text.split('id="authorize-url" readonly value="')[1].split('"')[0]
    assert teams_stack.sign_in(link.replace("&amp;", "&")).status_code == 200
    eventually(
        lambda: 'data-monitor-status="subscribed"' in client.get(base + "/teams").text,
        what="the monitor subscribed",
    )
    checked = client.get(base + "/teams/check")
    assert "notification_url" in checked.text
    assert "System check" in checked.text
    started = client.post(base + "/teams/sync", data={"csrf": csrf})
    assert "Sync all started." in started.text
    eventually(lambda: "Done" in client.get(base + "/teams").text, what="sync all done")
    one = client.get(base + "/teams/presence", params={"email": USERS[0]})
    assert USERS[0] in one.text
    unknown = client.get(base + "/teams/presence", params={"email": "nobody@contoso.example"})
    assert unknown.status_code == 404
    monitor_id = teams_stack.monitors()["items"][0]["id"]
    confirm = client.post(f"{base}/teams/monitors/{monitor_id}/delete", data={"csrf": csrf})
    assert "Delete this presence monitor?" in confirm.text
    deleted = client.post(
        f"{base}/teams/monitors/{monitor_id}/delete", data={"csrf": csrf, "confirm": "yes"}
    )
    assert "Presence monitor deleted." in deleted.text


def test_office_365_consent_is_requested_answered_and_enabled(
    teams_stack: TeamsStack, browser: tuple[httpx2.Client, str, str]
) -> None:
    client, csrf, base = browser
    page = client.get(base + "/office365")
    assert "must consent once" in page.text
    client.post(base + "/teams", data=_settings(csrf))  # the app consent is asked for
    requested = client.post(base + "/office365/consent", data={"csrf": csrf})
    assert requested.status_code == 200, requested.text
    link = requested.text.split('id="consent-url" readonly value="')[1].split('"')[0]
    teams_stack.microsoft.set_admin_consent(TENANT, "granted")
    assert teams_stack.sign_in(link.replace("&amp;", "&")).status_code == 200
    granted = client.get(base + "/office365")
    assert "consent granted" in granted.text
    enabled = client.post(base + "/office365/enabled", data={"csrf": csrf, "enabled": "yes"})
    assert "Office 365 enabled." in enabled.text
    assert teams_stack.integration("office365")["status"] == "enabled"
