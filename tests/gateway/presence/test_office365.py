"""Office 365 admin consent: the link, the administrator's answer, and what it records."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx2

from tests.gateway.presence.conftest import CLIENT_ID, TENANT, TeamsStack


def _consent(stack: TeamsStack) -> dict[str, str]:
    answer = stack.api("POST", "/integrations/office365/consent")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, str] = answer.json()
    return body


def _follow(stack: TeamsStack, consent_url: str) -> httpx2.Response:
    """The administrator's browser: the identity platform, then back to the gateway."""
    with httpx2.Client(timeout=10) as browser:
        at_microsoft = browser.get(consent_url)
        assert at_microsoft.status_code == 302, at_microsoft.text
        back = at_microsoft.headers["location"]
        assert back.startswith(stack.url + "/oauth/office365?")
        return browser.get(back)


def test_granted_consent_is_recorded_and_can_be_enabled(teams_stack: TeamsStack) -> None:
    """The link names the account's tenant and app; a grant shows as consent_granted."""
    assert teams_stack.set_teams().status_code == 200
    consent = _consent(teams_stack)
    query = parse_qs(urlsplit(consent["consent_url"]).query)
    assert urlsplit(consent["consent_url"]).path == f"/{TENANT}/v2.0/adminconsent"
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [teams_stack.url + "/oauth/office365"]
    assert teams_stack.integration("office365")["status"] == "consent_pending"  # type: ignore[index]
    page = _follow(teams_stack, consent["consent_url"])
    assert page.status_code == 200
    assert "Consent granted" in page.text
    assert teams_stack.integration("office365")["status"] == "consent_granted"  # type: ignore[index]
    enabled = teams_stack.api("PUT", "/integrations/office365/enabled", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["status"] == "enabled"


def test_denied_consent_keeps_the_reason_and_cannot_be_enabled(teams_stack: TeamsStack) -> None:
    """A refusal is recorded with Microsoft's error; enabling it is a 409 that says why."""
    assert teams_stack.set_teams().status_code == 200
    teams_stack.microsoft.set_admin_consent(TENANT, "denied", "The admin canceled the request")
    page = _follow(teams_stack, _consent(teams_stack)["consent_url"])
    assert "Consent not granted" in page.text
    item = teams_stack.integration("office365")
    assert item is not None
    assert item["status"] == "consent_denied"
    assert item["config"]["consent"]["outcome"]["error"] == "access_denied"
    refused = teams_stack.api("PUT", "/integrations/office365/enabled", json={"enabled": True})
    assert refused.status_code == 409
    assert "denied" in refused.json()["detail"]


def test_an_answer_is_accepted_once_and_only_for_the_latest_link(teams_stack: TeamsStack) -> None:
    """A replayed or superseded answer is a 400 page and changes nothing."""
    assert teams_stack.set_teams().status_code == 200
    first = _consent(teams_stack)
    with httpx2.Client(timeout=10) as browser:
        back = browser.get(first["consent_url"]).headers["location"]
    _consent(teams_stack)  # a newer link replaces the first
    stale = httpx2.get(back, timeout=10)
    assert stale.status_code == 400
    assert "expired" in stale.text or "replaced" in stale.text
    assert teams_stack.integration("office365")["status"] == "consent_pending"  # type: ignore[index]
    forged = httpx2.get(
        teams_stack.url + "/oauth/office365",
        params={"admin_consent": "True", "state": f"{teams_stack.account_id}.guess"},
        timeout=10,
    )
    assert forged.status_code == 400


def test_without_an_app_the_link_cannot_be_built(teams_stack: TeamsStack) -> None:
    """No GATEWAY_O365_CLIENT_ID and no Teams app: 409 naming both ways out."""
    answer = teams_stack.api("POST", "/integrations/office365/consent")
    assert answer.status_code == 409
    assert "GATEWAY_O365_CLIENT_ID" in answer.json()["detail"]


def test_an_unanswered_request_is_not_detectable_and_can_be_enabled(
    teams_stack: TeamsStack,
) -> None:
    """No answer within the hour: consent_not_detected, which may still be enabled."""
    assert teams_stack.set_teams().status_code == 200
    _consent(teams_stack)
    teams_stack.sql(
        "UPDATE integrations SET config = :config WHERE kind = 'office365'",
        config=json.dumps(
            {
                **teams_stack.integration("office365")["config"],  # type: ignore[index]
                "consent": {"state": "0" * 64, "expires_at": time.time() - 1},
            }
        ),
    )
    assert teams_stack.integration("office365")["status"] == "consent_not_detected"  # type: ignore[index]
    enabled = teams_stack.api("PUT", "/integrations/office365/enabled", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["status"] == "enabled"
