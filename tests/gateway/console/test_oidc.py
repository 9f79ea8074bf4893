"""Sign-in to the console with Microsoft Entra (OpenID Connect, code with PKCE) against
the fake identity platform: an allowed user gets a session, anyone else does not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from pydantic import ValidationError

from gateway.settings import Settings
from tests.fakes.microsoft import FakeMicrosoft
from tests.gateway.presence.conftest import TENANT
from tests.support.live import free_port, live_server

CLIENT = "9d0c6a51-2b7e-4c1f-8f3a-5e6d7c8b9a01"
SECRET = "console~client~secret~0123456789"
ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"


@pytest.fixture
def gateway(
    teams_settings: Callable[..., Settings], microsoft: tuple[FakeMicrosoft, str]
) -> Iterator[tuple[str, FakeMicrosoft]]:
    fake, _url = microsoft
    port = free_port()
    fake.add_app(TENANT, CLIENT, SECRET, redirect_uris=[f"http://127.0.0.1:{port}/admin/oidc"])
    fake.add_user(TENANT, ALICE)
    fake.add_user(TENANT, BOB)
    settings = teams_settings(
        port,
        console_oidc_tenant=TENANT,
        console_oidc_client_id=CLIENT,
        console_oidc_client_secret=SECRET,
        console_oidc_allowed=f"{ALICE.upper()}, some-group-id",
    )
    with live_server(settings, port) as url:
        yield url, fake


def _sign_in(url: str, client: httpx2.Client, upn: str) -> httpx2.Response:
    return client.get(
        url + "/admin/oidc/start", params={"login_hint": upn, "next": "/admin/accounts"}
    )


def test_an_allowed_user_signs_in_with_microsoft(gateway: tuple[str, FakeMicrosoft]) -> None:
    url, fake = gateway
    with httpx2.Client(follow_redirects=True, timeout=30) as client:
        page = client.get(url + "/admin/sign-in")
        assert "Sign in with Microsoft" in page.text
        signed = _sign_in(url, client, ALICE)
        assert signed.status_code == 200, signed.text
        assert f"Signed in as {ALICE}" in signed.text
        assert 'http-equiv="refresh" content="0;url=/admin/accounts"' in signed.text
        accounts = client.get(url + "/admin/accounts", follow_redirects=False)
        assert accounts.status_code == 200
        assert "Signed in as" in accounts.text
    assert fake.identity.tokens_issued["authorization_code"] == 1


def test_someone_not_allowed_gets_no_session(gateway: tuple[str, FakeMicrosoft]) -> None:
    url, _fake = gateway
    with httpx2.Client(follow_redirects=True, timeout=30) as client:
        refused = _sign_in(url, client, BOB)
        assert refused.status_code == 403
        assert f"{BOB} may not sign in to this console." in refused.text
        assert client.get(url + "/admin/accounts", follow_redirects=False).status_code == 303


def test_a_callback_without_its_state_is_refused(gateway: tuple[str, FakeMicrosoft]) -> None:
    url, _fake = gateway
    with httpx2.Client(follow_redirects=False, timeout=30) as client:
        started = client.get(url + "/admin/oidc/start", params={"login_hint": ALICE})
        assert started.status_code == 302
        forged = client.get(url + "/admin/oidc", params={"code": "x", "state": "forged"})
        assert forged.status_code == 400
        assert "did not start here" in forged.text
    with httpx2.Client(timeout=30) as other:  # no state cookie at all
        assert other.get(url + "/admin/oidc", params={"code": "x", "state": "y"}).status_code == 400


def test_a_refusal_by_microsoft_is_shown(gateway: tuple[str, FakeMicrosoft]) -> None:
    url, _fake = gateway
    with httpx2.Client(follow_redirects=True, timeout=30) as client:
        refused = _sign_in(url, client, "nobody@contoso.example")
        assert refused.status_code == 401
        assert "Microsoft refused the sign-in" in refused.text


@pytest.mark.parametrize(
    "values",
    [
        {"console_oidc_tenant": TENANT},
        {
            "console_oidc_tenant": TENANT,
            "console_oidc_client_id": CLIENT,
            "console_oidc_client_secret": SECRET,
        },
    ],
    ids=["partial", "nobody-allowed"],
)
def test_settings_refuse_a_half_configured_sign_in(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="GATEWAY_CONSOLE_OIDC"):
        Settings(**values)


def test_without_entra_the_start_is_not_found(console: Any) -> None:
    assert console.get("/admin/oidc/start").status_code == 404
    assert "Sign in with Microsoft" not in console.get("/admin/sign-in").text
