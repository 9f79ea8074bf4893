"""The Teams integration: the app is checked with the identity platform before it is stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.gateway.presence.conftest import CLIENT_ID, CLIENT_SECRET, TENANT, TeamsStack


def test_valid_app_is_stored_with_its_secret_masked(teams_stack: TeamsStack) -> None:
    """A secret the identity platform accepts is saved; no answer or event shows it."""
    answer = teams_stack.set_teams(secret_expires="2027-06-30")
    assert answer.status_code == 200, answer.text
    item = answer.json()
    assert item["status"] == "active"
    assert item["config"]["tenant_id"] == TENANT
    assert item["config"]["client_id"] == CLIENT_ID
    assert item["config"]["secret_expires"] == "2027-06-30"
    assert item["config"]["presence_to_teams"] is True
    assert CLIENT_SECRET not in answer.text
    assert CLIENT_SECRET not in json.dumps(teams_stack.feed())
    listed = teams_stack.integration("microsoft_teams")
    assert listed is not None
    assert CLIENT_SECRET not in json.dumps(listed)


def test_refused_secret_is_a_422_naming_the_reason_and_stores_nothing(
    teams_stack: TeamsStack,
) -> None:
    """A wrong client secret answers 422 with Microsoft's code; nothing is saved."""
    answer = teams_stack.set_teams(client_secret="not-the-secret-value")
    assert answer.status_code == 422, answer.text
    assert "AADSTS7000215" in answer.json()["detail"]
    assert teams_stack.integration("microsoft_teams") is None


def test_expired_secret_is_refused(teams_stack: TeamsStack) -> None:
    """A secret past its expiry is refused by the identity platform, and so here."""
    teams_stack.microsoft.add_app(
        TENANT,
        "0e0e0e0e-1111-4222-8333-444455556666",
        "an-expired-secret-value",
        secret_expires=datetime.now(UTC) - timedelta(days=1),
    )
    answer = teams_stack.set_teams(
        client_id="0e0e0e0e-1111-4222-8333-444455556666", client_secret="an-expired-secret-value"
    )
    assert answer.status_code == 422, answer.text
    assert "AADSTS7000222" in answer.json()["detail"]


def test_malformed_ids_are_refused_before_any_call(teams_stack: TeamsStack) -> None:
    """A tenant id that is not a GUID is a 400 and no token is asked for."""
    before = len(teams_stack.microsoft.requests)
    answer = teams_stack.set_teams(tenant_id="contoso.onmicrosoft.com")
    assert answer.status_code == 400, answer.text
    assert len(teams_stack.microsoft.requests) == before


def test_presence_toggle_is_kept_when_omitted(teams_stack: TeamsStack) -> None:
    """A secret renewal without the toggle keeps the account's choice."""
    assert teams_stack.set_teams(presence_to_teams=True).status_code == 200
    renewed = teams_stack.set_teams(presence_to_teams=None)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["config"]["presence_to_teams"] is True


def test_a_new_tenant_or_client_id_marks_monitors_for_renewal(teams_stack: TeamsStack) -> None:
    """Monitors signed in to the old app show needs_update, and the answer warns about it."""
    assert teams_stack.set_teams().status_code == 200
    added = teams_stack.api("POST", "/presence/monitors", json={"upn": "m@contoso.example"})
    assert added.status_code == 201
    other_client = "0f0f0f0f-2222-4333-8444-555566667777"
    teams_stack.microsoft.add_app(TENANT, other_client, CLIENT_SECRET)
    changed = teams_stack.set_teams(client_id=other_client)
    assert changed.status_code == 200, changed.text
    assert "needs_update" in changed.json()["warnings"][0]
    assert teams_stack.monitors()["items"][0]["status"] == "needs_update"
