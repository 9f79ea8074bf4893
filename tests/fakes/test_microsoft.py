"""The Microsoft fake enforces Entra's and Graph's rules, and pushes what Graph pushes.

Each test drives the fake as the gateway would (form posts, bearer tokens, JSON) and checks
both that the right call works and that the wrong one fails as Microsoft's would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.fakes.loopback import serve_app
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.microsoft_graph import ids_resource
from tests.fakes.microsoft_identity import GRAPH_NOTIFICATIONS_APP_ID, pkce_challenge

TENANT = "8f0c2b1e-4d5a-4c3b-9a7e-1f2d3c4b5a69"
OTHER_TENANT = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
CLIENT = "6e5d4c3b-2a19-4f8e-8d7c-6b5a49382716"
SECRET = "Zq8~s3cr3t.value_with-specials"
REDIRECT = "https://gateway.example/monitors/callback"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MONITOR_SCOPE = (
    "openid profile email offline_access https://graph.microsoft.com/Presence.Read.All "
    "https://graph.microsoft.com/User.Read.All"
)
MONITOR = "monitor@contoso.com"
VERIFIER = "v" * 20 + "-._~" + "0123456789" * 3


def build(**options: Any) -> FakeMicrosoft:
    fake = FakeMicrosoft(**options)
    fake.add_tenant(TENANT)
    fake.add_app(TENANT, CLIENT, SECRET, redirect_uris=[REDIRECT])
    fake.add_user(TENANT, MONITOR)
    return fake


@pytest.fixture
def ms() -> Iterator[FakeMicrosoft]:
    with build() as fake:
        yield fake


@pytest.fixture
def client(ms: FakeMicrosoft) -> TestClient:
    return TestClient(ms.app, follow_redirects=False)


def token_request(client: TestClient, tenant: str = TENANT, **form: str) -> Any:
    return client.post(f"/{tenant}/oauth2/v2.0/token", data=form)


def app_token(client: TestClient, client_id: str = CLIENT, secret: str = SECRET) -> str:
    response = token_request(
        client,
        grant_type="client_credentials",
        client_id=client_id,
        client_secret=secret,
        scope=GRAPH_SCOPE,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def authorize(client: TestClient, upn: str = MONITOR, **overrides: str) -> Any:
    params = {
        "client_id": CLIENT,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "response_mode": "query",
        "scope": MONITOR_SCOPE,
        "state": "state-123",
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
        "login_hint": upn,
        "prompt": "select_account",
    } | overrides
    return client.get(f"/{TENANT}/oauth2/v2.0/authorize", params=params)


def redirected(response: Any) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def redeem(client: TestClient, code: str, verifier: str = VERIFIER, **overrides: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "scope": MONITOR_SCOPE,
    } | overrides
    return token_request(client, **form)


def sign_in(client: TestClient, upn: str = MONITOR) -> dict[str, Any]:
    response = redeem(client, redirected(authorize(client, upn))["code"])
    assert response.status_code == 200, response.text
    return dict(response.json())


def refresh(client: TestClient, refresh_token: str, secret: str = SECRET) -> Any:
    return token_request(
        client,
        grant_type="refresh_token",
        client_id=CLIENT,
        client_secret=secret,
        refresh_token=refresh_token,
        scope=MONITOR_SCOPE,
    )


def entra_error(response: Any) -> tuple[int, str, int]:
    body = response.json()
    assert body["error_description"].startswith(f"AADSTS{body['error_codes'][0]}: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    return response.status_code, body["error"], body["error_codes"][0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def graph_code(response: Any) -> tuple[int, str]:
    error = response.json()["error"]
    assert {"date", "request-id", "client-request-id"} <= set(error["innerError"])
    return response.status_code, error["code"]


def verify(token: str, jwks: dict[str, Any], audience: str) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [key for key in jwks["keys"] if key["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(key, algorithm="RS256"), algorithms=["RS256"], audience=audience
    )
    return claims


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# The identity platform


def test_client_credentials_token_is_an_app_jwt_the_jwks_verifies(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    response = token_request(
        client,
        grant_type="client_credentials",
        client_id=CLIENT,
        client_secret=SECRET,
        scope=GRAPH_SCOPE,
    )
    body = response.json()
    assert response.status_code == 200
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3599)
    assert "refresh_token" not in body
    jwks = client.get(f"/{TENANT}/discovery/v2.0/keys").json()
    assert {"kty", "use", "kid", "n", "e", "x5t"} <= set(jwks["keys"][0])
    claims = verify(body["access_token"], jwks, "https://graph.microsoft.com")
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert (claims["tid"], claims["appid"], claims["azp"]) == (TENANT, CLIENT, CLIENT)
    assert claims["idtyp"] == "app"
    assert set(claims["roles"]) == {"User.Read.All", "Presence.ReadWrite.All"}
    assert claims["exp"] > time.time() + 3000
    assert ms.tokens_issued["client_credentials"] == 1


def test_client_credentials_refusals_carry_entra_codes(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    expired_client = "0f0e0d0c-0b0a-4909-8807-060504030201"
    ms.add_app(TENANT, expired_client, "old", secret_expires=datetime.now(UTC) - timedelta(days=1))
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "scope": GRAPH_SCOPE,
    }
    wrong_secret = token_request(client, **(form | {"client_secret": "nope"}))
    assert entra_error(wrong_secret) == (401, "invalid_client", 7000215)
    expired = token_request(
        client, **(form | {"client_id": expired_client, "client_secret": "old"})
    )
    assert entra_error(expired) == (401, "invalid_client", 7000222)
    unknown_client = token_request(client, **(form | {"client_id": "nobody"}))
    assert entra_error(unknown_client) == (400, "unauthorized_client", 700016)
    unknown_tenant = token_request(client, tenant=OTHER_TENANT, **form)
    assert entra_error(unknown_tenant) == (400, "invalid_request", 90002)
    bad_scope = token_request(client, **(form | {"scope": "https://graph.microsoft.com/User.Read"}))
    assert entra_error(bad_scope) == (400, "invalid_scope", 1002012)
    as_json = client.post(f"/{TENANT}/oauth2/v2.0/token", json=form)
    assert entra_error(as_json) == (400, "invalid_request", 900144)
    assert ms.tokens_issued["client_credentials"] == 0
    assert token_request(client, **form).status_code == 200


def test_authorization_code_with_pkce_signs_the_login_hint_user_in(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    params = redirected(authorize(client))
    assert params["state"] == "state-123"
    response = redeem(client, params["code"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["refresh_token"]
    jwks = ms.jwks(TENANT)
    access = verify(tokens["access_token"], jwks, "https://graph.microsoft.com")
    monitor = ms.user(MONITOR)
    assert (access["oid"], access["upn"], access["tid"]) == (monitor["id"], MONITOR, TENANT)
    assert access["idtyp"] == "user"
    assert {"Presence.Read.All", "User.Read.All"} <= set(access["scp"].split())
    identity = verify(tokens["id_token"], jwks, CLIENT)
    assert (identity["oid"], identity["preferred_username"]) == (monitor["id"], MONITOR)
    assert "https://graph.microsoft.com/Presence.Read.All" in tokens["scope"].split()


def test_code_redemption_checks_pkce_redirect_uri_and_single_use(client: TestClient) -> None:
    code = redirected(authorize(client))["code"]
    mismatch = redeem(client, code, verifier="w" * 50)
    assert entra_error(mismatch) == (400, "invalid_grant", 501481)
    other_redirect = redeem(client, code, redirect_uri="https://gateway.example/elsewhere")
    assert entra_error(other_redirect) == (400, "invalid_grant", 500112)
    no_secret = redeem(client, code, client_secret="")
    assert entra_error(no_secret) == (401, "invalid_client", 7000218)
    assert redeem(client, code).status_code == 200
    reused = redeem(client, code)
    assert entra_error(reused) == (400, "invalid_grant", 54005)


def test_authorize_errors_show_a_page_or_redirect_as_entra_does(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    unknown_client = authorize(client, client_id="3c2b1a09-8f7e-4d6c-9b5a-493827161504")
    assert unknown_client.status_code == 400
    assert "AADSTS700016" in unknown_client.text
    unregistered = authorize(client, redirect_uri="https://evil.example/cb")
    assert unregistered.status_code == 400
    assert "AADSTS50011" in unregistered.text
    unknown_user = redirected(authorize(client, "ghost@contoso.com"))
    assert unknown_user["error"] == "access_denied"
    assert unknown_user["state"] == "state-123"
    ms.add_user(TENANT, "blocked@contoso.com")
    ms.deny_sign_in("blocked@contoso.com")
    blocked = redirected(authorize(client, "blocked@contoso.com"))
    assert (blocked["error"], blocked["error_description"][:12]) == (
        "access_denied",
        "AADSTS50105:",
    )
    plain = redirected(authorize(client, code_challenge_method="plain"))
    assert plain["error"] == "invalid_request"
    not_consented = redirected(authorize(client, scope="openid Mail.Send"))
    assert not_consented["error"] == "consent_required"
    without_offline = redirected(authorize(client, scope="openid Presence.Read.All"))
    tokens = redeem(client, without_offline["code"]).json()
    assert "refresh_token" not in tokens
    assert "id_token" in tokens


def test_refresh_tokens_rotate_and_the_used_one_is_refused(client: TestClient) -> None:
    first = sign_in(client)["refresh_token"]
    rotated = refresh(client, first)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first
    assert rotated.json()["access_token"]
    assert entra_error(refresh(client, first)) == (400, "invalid_grant", 70000)
    assert entra_error(refresh(client, second, secret="wrong")) == (401, "invalid_client", 7000215)
    assert refresh(client, second).status_code == 200


def test_revoked_or_expired_refresh_tokens_answer_invalid_grant(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    revoked = sign_in(client)["refresh_token"]
    ms.revoke_refresh_tokens(MONITOR)
    assert entra_error(refresh(client, revoked)) == (400, "invalid_grant", 50173)
    expired = sign_in(client)["refresh_token"]
    ms.expire_refresh_tokens(MONITOR)
    assert entra_error(refresh(client, expired)) == (400, "invalid_grant", 700082)
    assert refresh(client, sign_in(client)["refresh_token"]).status_code == 200


def test_admin_consent_redirects_back_granted_or_denied(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    params = {
        "client_id": CLIENT,
        "scope": GRAPH_SCOPE,
        "redirect_uri": REDIRECT,
        "state": "consent-1",
    }
    granted = redirected(client.get("/organizations/v2.0/adminconsent", params=params))
    assert granted["admin_consent"] == "True"
    assert (granted["tenant"], granted["state"]) == (TENANT, "consent-1")
    assert "https://graph.microsoft.com/Presence.ReadWrite.All" in granted["scope"].split()
    assert "error" not in granted
    ms.set_admin_consent(TENANT, "denied")
    denied = redirected(client.get(f"/{TENANT}/v2.0/adminconsent", params=params))
    assert (denied["admin_consent"], denied["error"]) == ("True", "access_denied")
    assert denied["error_description"].startswith("AADSTS65004")
    assert denied["state"] == "consent-1"
    unknown = client.get("/common/v2.0/adminconsent", params=params | {"client_id": "x"})
    assert unknown.status_code == 400
    assert [c["outcome"] for c in ms.consents] == ["granted", "denied"]


def test_rotated_signing_key_signs_new_tokens_and_old_ones_still_verify(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    old_token = app_token(client)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = ms.rotate_signing_key()
    new_token = app_token(client)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    jwks = client.get("/common/discovery/v2.0/keys").json()
    assert {key["kid"] for key in jwks["keys"]} == {old_kid, new_kid}
    for token in (old_token, new_token):
        verify(token, jwks, "https://graph.microsoft.com")
        assert client.get(f"/v1.0/users/{MONITOR}", headers=bearer(token)).status_code == 200


def test_login_faults_answer_before_the_token_endpoint(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    ms.login_faults.fail_next(1, 503, retry_after="2")
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "scope": GRAPH_SCOPE,
    }
    failed = token_request(client, **form)
    assert (failed.status_code, failed.headers["retry-after"]) == (503, "2")
    assert failed.json()["error"] == "temporarily_unavailable"
    assert token_request(client, **form).status_code == 200
    assert ms.requests == [("POST", f"/{TENANT}/oauth2/v2.0/token")] * 2
    assert ms.tokens_issued["client_credentials"] == 1


# Graph: authentication, users, presence


def test_graph_refuses_missing_forged_expired_and_foreign_tokens(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    url = f"/v1.0/users/{MONITOR}"
    assert graph_code(client.get(url)) == (401, "InvalidAuthenticationToken")
    assert graph_code(client.get(url, headers=bearer("not-a-jwt"))) == (
        401,
        "InvalidAuthenticationToken",
    )
    foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(app_token(client), options={"verify_signature": False})
    kid = jwt.get_unverified_header(app_token(client))["kid"]
    forged = jwt.encode(claims, foreign_key, algorithm="RS256", headers={"kid": kid})
    assert graph_code(client.get(url, headers=bearer(forged)))[0] == 401
    expired = ms.directory.sign(claims | {"exp": int(time.time()) - 10})
    expired_answer = client.get(url, headers=bearer(expired))
    assert graph_code(expired_answer)[0] == 401
    assert "expired" in expired_answer.json()["error"]["message"]
    id_token = sign_in(client)["id_token"]
    assert graph_code(client.get(url, headers=bearer(id_token)))[0] == 401
    assert client.get(url, headers=bearer(app_token(client))).status_code == 200


def test_user_lookup_by_id_or_upn_needs_user_read_all(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    token = app_token(client)
    monitor = ms.user(MONITOR)
    by_upn = client.get(
        f"/v1.0/users/{MONITOR.upper()}?$select=id,userPrincipalName,mail", headers=bearer(token)
    )
    assert by_upn.status_code == 200
    assert by_upn.json()["id"] == monitor["id"]
    assert "displayName" not in by_upn.json()
    by_id = client.get(f"/v1.0/users/{monitor['id']}", headers=bearer(token)).json()
    assert by_id["userPrincipalName"] == MONITOR
    missing = client.get("/v1.0/users/ghost@contoso.com", headers=bearer(token))
    assert graph_code(missing) == (404, "Request_ResourceNotFound")
    narrow = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
    ms.add_app(TENANT, narrow, SECRET, application_permissions=["Presence.Read.All"])
    refused = client.get(f"/v1.0/users/{MONITOR}", headers=bearer(app_token(client, narrow)))
    assert graph_code(refused) == (403, "Authorization_RequestDenied")


def test_presence_reads_single_and_bulk_with_unknown_ids_left_out(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    token = app_token(client)
    alice, bob = ms.add_users(TENANT, 2)
    ms.set_teams_presence(alice, "Busy", "InAMeeting")
    single = client.get(f"/v1.0/users/{alice}/presence", headers=bearer(token)).json()
    assert (single["availability"], single["activity"]) == ("Busy", "InAMeeting")
    unknown = "00000000-0000-4000-8000-000000000000"
    bulk = client.post(
        "/v1.0/communications/getPresencesByUserId",
        json={"ids": [alice, bob, unknown]},
        headers=bearer(token),
    )
    assert bulk.status_code == 200
    assert {p["id"]: p["availability"] for p in bulk.json()["value"]} == {
        alice: "Busy",
        bob: "Offline",
    }
    too_many = client.post(
        "/v1.0/communications/getPresencesByUserId",
        json={"ids": [unknown] * 651},
        headers=bearer(token),
    )
    assert graph_code(too_many)[0] == 400
    monitor_token = sign_in(client)["access_token"]
    delegated = client.get(f"/v1.0/users/{alice}/presence", headers=bearer(monitor_token))
    assert delegated.status_code == 200
    writer_only = "7b6a5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
    ms.add_app(TENANT, writer_only, SECRET, application_permissions=["User.Read.All"])
    refused = client.get(
        f"/v1.0/users/{alice}/presence", headers=bearer(app_token(client, writer_only))
    )
    assert graph_code(refused)[0] == 403


def test_set_presence_accepts_only_documented_pairs_and_its_own_session(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    token = app_token(client)
    user = ms.add_user(TENANT, "alice@contoso.com")
    url = f"/v1.0/users/{user}/presence/setPresence"

    def set_presence(token: str = token, **body: str) -> Any:
        return client.post(url, json={"sessionId": CLIENT} | body, headers=bearer(token))

    ok = set_presence(availability="Busy", activity="InACall", expirationDuration="PT1H")
    assert (ok.status_code, ok.content) == (200, b"")
    assert (ms.presence(user)["availability"], ms.presence(user)["activity"]) == (
        "Busy",
        "InACall",
    )
    [session] = ms.sessions(user).values()
    assert session["expires_at"] > datetime.now(UTC) + timedelta(minutes=59)
    assert set_presence(availability="Busy", activity="Busy").status_code == 400
    assert set_presence(availability="Available", activity="Away").status_code == 400
    assert set_presence(availability="Away", activity="Away", sessionId="other").status_code == 400
    for duration in ("PT4M", "PT4H1M", "soon"):
        refused = set_presence(availability="Away", activity="Away", expirationDuration=duration)
        assert refused.status_code == 400
    delegated = sign_in(client)["access_token"]
    assert set_presence(delegated, availability="Away", activity="Away").status_code == 403
    no_content_type = client.post(
        url,
        content=orjson.dumps({"sessionId": CLIENT, "availability": "Away", "activity": "Away"}),
        headers=bearer(token),
    )
    assert no_content_type.status_code == 400
    assert [call["status"] for call in ms.set_presence_calls] == [
        200,
        400,
        400,
        400,
        400,
        400,
        400,
        403,
    ]
    assert ms.presence(user)["activity"] == "InACall"


def test_visible_presence_aggregates_sessions_teams_client_and_preferred(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    token = app_token(client)
    user = ms.add_user(TENANT, "alice@contoso.com")
    base = f"/v1.0/users/{user}/presence"

    def post(action: str, **body: str) -> Any:
        return client.post(f"{base}/{action}", json=body, headers=bearer(token))

    def shown() -> tuple[str, str]:
        presence = ms.presence(user)
        return presence["availability"], presence["activity"]

    ms.set_teams_presence(user, "Available", "Available")
    post("setPresence", sessionId=CLIENT, availability="Busy", activity="InACall")
    assert shown() == ("Busy", "InACall")
    ms.set_teams_presence(user, "DoNotDisturb", "Presenting")
    assert shown() == ("DoNotDisturb", "Presenting")
    assert post("setUserPreferredPresence", availability="Away", activity="Busy").status_code == 400
    preferred = post("setUserPreferredPresence", availability="BeRightBack", activity="BeRightBack")
    assert preferred.status_code == 200
    assert shown() == ("BeRightBack", "BeRightBack")
    assert post("clearPresence", sessionId=CLIENT).status_code == 200
    assert shown() == ("BeRightBack", "BeRightBack")  # the Teams client is still a session
    ms.set_teams_presence(user, "Offline", "Offline")
    assert shown() == ("Offline", "Offline")  # no session: the preferred presence hides
    assert graph_code(post("clearPresence", sessionId=CLIENT)) == (404, "NotFound")
    assert post("clearUserPreferredPresence").status_code == 200
    assert ms.preferred_presence(user) is None


def test_available_session_fades_then_turns_away() -> None:
    with build(available_fade=0.15) as ms:
        client = TestClient(ms.app, follow_redirects=False)
        user = ms.add_user(TENANT, "alice@contoso.com")
        answer = client.post(
            f"/v1.0/users/{user}/presence/setPresence",
            json={"sessionId": CLIENT, "availability": "Available", "activity": "Available"},
            headers=bearer(app_token(client)),
        )
        assert answer.status_code == 200
        assert ms.presence(user)["activity"] == "Available"
        wait_until(lambda: ms.presence(user)["activity"] == "AvailableInactive")
        assert ms.presence(user)["availability"] == "Available"
        wait_until(lambda: ms.presence(user)["availability"] == "Away")


def test_presence_rate_limit_answers_429_with_fractional_retry_after() -> None:
    with build(presence_window=1.25, presence_budget=2) as ms:
        client = TestClient(ms.app, follow_redirects=False)
        user = ms.add_user(TENANT, "alice@contoso.com")
        token = app_token(client)
        url = f"/v1.0/users/{user}/presence"
        assert [client.get(url, headers=bearer(token)).status_code for _ in range(2)] == [200, 200]
        limited = client.get(url, headers=bearer(token))
        assert graph_code(limited) == (429, "TooManyRequests")
        wait = limited.headers["retry-after"]
        assert "." in wait
        assert 0 < float(wait) <= 1.3
        other_app = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
        ms.add_app(TENANT, other_app, SECRET)
        other = client.get(url, headers=bearer(app_token(client, other_app)))
        assert other.status_code == 200  # the budget is per app


def test_graph_faults_answer_before_authentication(ms: FakeMicrosoft, client: TestClient) -> None:
    ms.graph_faults.fail_next(1, 429, retry_after="0.5")
    failed = client.get(f"/v1.0/users/{MONITOR}")
    assert graph_code(failed) == (429, "TooManyRequests")
    assert failed.headers["retry-after"] == "0.5"
    assert graph_code(client.get(f"/v1.0/users/{MONITOR}"))[0] == 401


# Graph: $batch


def test_batch_limits_unique_ids_and_content_type_per_item(
    ms: FakeMicrosoft, client: TestClient
) -> None:
    token = app_token(client)
    user = ms.add_user(TENANT, "alice@contoso.com")
    body = {"sessionId": CLIENT, "availability": "Away", "activity": "Away"}
    write = {
        "method": "POST",
        "url": f"/users/{user}/presence/setPresence",
        "body": body,
        "headers": {"Content-Type": "application/json"},
    }
    read = {"method": "GET", "url": f"/users/{user}/presence"}
    too_many = [read | {"id": str(n)} for n in range(21)]
    answer = client.post("/v1.0/$batch", json={"requests": too_many}, headers=bearer(token))
    assert graph_code(answer) == (400, "BadRequest")
    duplicate = [read | {"id": "1"}, read | {"id": "1"}]
    answer = client.post("/v1.0/$batch", json={"requests": duplicate}, headers=bearer(token))
    assert answer.status_code == 400
    items = [
        write | {"id": "1", "headers": {}},
        write | {"id": "2"},
        read | {"id": "3"},
        read | {"id": "4", "url": f"https://graph.microsoft.com/v1.0/users/{user}/presence"},
    ]
    answer = client.post("/v1.0/$batch", json={"requests": items}, headers=bearer(token))
    assert answer.status_code == 200
    by_id = {item["id"]: item for item in answer.json()["responses"]}
    assert by_id["1"]["status"] == 400
    assert by_id["1"]["body"]["error"]["message"] == (
        "Write request id : 1 does not contain Content-Type header or body."
    )
    assert by_id["2"]["status"] == 200
    assert by_id["3"]["status"] == 200
    assert by_id["3"]["body"]["availability"] == "Away"
    assert by_id["4"]["status"] == 400
    assert ms.batch_items[1] == ("POST", f"/users/{user}/presence/setPresence")


def test_batch_items_are_throttled_one_by_one() -> None:
    with build(presence_window=30, presence_budget=3) as ms:
        client = TestClient(ms.app, follow_redirects=False)
        token = app_token(client)
        users = ms.add_users(TENANT, 5)
        ms.throttle_batch_items(1, retry_after="2.5")
        items = [
            {
                "id": str(index),
                "method": "POST",
                "url": f"/users/{user}/presence/setPresence",
                "body": {"sessionId": CLIENT, "availability": "Busy", "activity": "InACall"},
                "headers": {"Content-Type": "application/json"},
            }
            for index, user in enumerate(users)
        ]
        answer = client.post("/v1.0/$batch", json={"requests": items}, headers=bearer(token))
        assert answer.status_code == 200
        statuses = {item["id"]: item for item in answer.json()["responses"]}
        assert statuses["0"]["status"] == 429
        assert statuses["0"]["headers"]["Retry-After"] == "2.5"
        assert [statuses[str(n)]["status"] for n in range(1, 5)] == [200, 200, 200, 429]
        assert float(statuses["4"]["headers"]["Retry-After"]) > 0
        assert [ms.presence(u)["availability"] for u in users] == [
            "Offline",
            "Busy",
            "Busy",
            "Busy",
            "Offline",
        ]


# Graph: subscriptions and notifications


class Receiver:
    """The gateway's notification endpoints, as a tiny real app: echo the validation token."""

    def __init__(self, *, answer: str = "echo", delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.statuses: list[int] = []
        self.tokens: list[str] = []
        self.notifications: list[dict[str, Any]] = []
        self.lifecycle: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/notify", self._notify, methods=["POST"]),
                Route("/lifecycle", self._lifecycle, methods=["POST"]),
            ]
        )

    async def _validate(self, request: Request) -> Response | None:
        token = request.query_params.get("validationToken")
        if token is None:
            return None
        self.tokens.append(token)
        await asyncio.sleep(self.delay)
        if self.answer == "json":
            return JSONResponse({"validationToken": token})
        return PlainTextResponse(token)

    async def _notify(self, request: Request) -> Response:
        validation = await self._validate(request)
        if validation is not None:
            return validation
        self.notifications.append(orjson.loads(await request.body()))
        return Response(status_code=self.statuses.pop(0) if self.statuses else 202)

    async def _lifecycle(self, request: Request) -> Response:
        validation = await self._validate(request)
        if validation is not None:
            return validation
        self.lifecycle.append(orjson.loads(await request.body()))
        return Response(status_code=202)

    def items(self) -> list[dict[str, Any]]:
        return [item for body in self.notifications for item in body["value"]]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    endpoint = Receiver()
    with serve_app(endpoint.app) as base:
        yield endpoint, base


def subscription_body(base: str, user_ids: list[str], **overrides: Any) -> dict[str, Any]:
    expires = datetime.now(UTC) + timedelta(minutes=55)
    return {
        "changeType": "updated",
        "notificationUrl": f"{base}/notify",
        "lifecycleNotificationUrl": f"{base}/lifecycle",
        "resource": ids_resource(user_ids),
        "expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "clientState": "secret-client-state",
    } | overrides


def subscribe(client: TestClient, token: str, body: dict[str, Any]) -> Any:
    return client.post("/v1.0/subscriptions", json=body, headers=bearer(token))


def test_subscription_create_does_the_validation_handshake_on_both_urls(
    ms: FakeMicrosoft, client: TestClient, receiver: tuple[Receiver, str]
) -> None:
    endpoint, base = receiver
    user = ms.add_user(TENANT, "alice@contoso.com")
    monitor = sign_in(client)["access_token"]
    created = subscribe(client, monitor, subscription_body(base, [user]))
    assert created.status_code == 201, created.text
    subscription = created.json()
    assert [v["url"] for v in ms.validations] == [f"{base}/notify", f"{base}/lifecycle"]
    assert endpoint.tokens == [v["token"] for v in ms.validations]
    assert " " in endpoint.tokens[0]  # the receiver had to URL-decode it
    assert subscription["applicationId"] == CLIENT
    assert subscription["creatorId"] == ms.user(MONITOR)["id"]
    assert subscription["latestSupportedTlsVersion"] == "v1_2"
    assert subscription["notificationUrlAppId"] is None
    assert subscription["includeResourceData"] is False
    assert subscription["expirationDateTime"].endswith("0Z")  # seven fractional digits
    assert ms.subscriptions()[0]["id"] == subscription["id"]
    listed = client.get("/v1.0/subscriptions", headers=bearer(monitor)).json()["value"]
    assert [s["id"] for s in listed] == [subscription["id"]]


@pytest.mark.parametrize(("answer", "delay"), [("json", 0.0), ("echo", 0.6)])
def test_subscription_is_refused_when_the_endpoint_answers_wrong_or_slowly(
    answer: str, delay: float
) -> None:
    endpoint = Receiver(answer=answer, delay=delay)
    with build(notification_timeout=0.25) as ms, serve_app(endpoint.app) as base:
        client = TestClient(ms.app, follow_redirects=False)
        user = ms.add_user(TENANT, "alice@contoso.com")
        monitor = sign_in(client)["access_token"]
        refused = subscribe(client, monitor, subscription_body(base, [user]))
        assert graph_code(refused) == (400, "ValidationError")
        assert endpoint.tokens
        assert not ms.validations[0]["ok"]
        assert ms.subscriptions() == []


def test_subscription_needs_a_delegated_token_one_per_user_and_650_ids(
    ms: FakeMicrosoft, client: TestClient, receiver: tuple[Receiver, str]
) -> None:
    _, base = receiver
    users = ms.add_users(TENANT, 2)
    monitor = sign_in(client)["access_token"]
    app_only = subscribe(client, app_token(client), subscription_body(base, users))
    assert graph_code(app_only)[0] == 403
    too_many = [f"00000000-0000-4000-8000-{n:012d}" for n in range(651)]
    assert subscribe(client, monitor, subscription_body(base, too_many)).status_code == 400
    exactly = subscription_body(base, too_many[:650])
    bad_resources = ["/users/x/presence", "/communications/presences?$filter=id in (abc)"]
    for resource in bad_resources:
        answer = subscribe(client, monitor, subscription_body(base, users, resource=resource))
        assert answer.status_code == 400
    plain_http = subscription_body(base, users, notificationUrl="http://gateway.example/n")
    assert subscribe(client, monitor, plain_http).status_code == 400
    no_certificate = subscription_body(base, users, includeResourceData=True)
    assert subscribe(client, monitor, no_certificate).status_code == 400
    assert ms.validations == []  # every refusal above came before the handshake
    assert subscribe(client, monitor, exactly).status_code == 201
    second = subscribe(client, monitor, subscription_body(base, users))
    assert graph_code(second) == (409, "ExtensionError")
    ms.add_user(TENANT, "monitor2@contoso.com")
    other_monitor = sign_in(client, "monitor2@contoso.com")["access_token"]
    single = subscription_body(base, [], resource=f"/communications/presences/{users[0]}")
    assert subscribe(client, other_monitor, single).status_code == 201


def test_subscription_lifetime_is_at_most_60_minutes_and_may_be_shortened(
    receiver: tuple[Receiver, str],
) -> None:
    _, base = receiver
    with build(max_subscription_minutes=30) as ms:
        client = TestClient(ms.app, follow_redirects=False)
        user = ms.add_user(TENANT, "alice@contoso.com")
        monitor = sign_in(client)["access_token"]
        now = datetime.now(UTC)
        for too_far in (now + timedelta(minutes=61), now - timedelta(minutes=1)):
            body = subscription_body(base, [user], expirationDateTime=too_far.isoformat())
            assert subscribe(client, monitor, body).status_code == 400
        created = subscribe(client, monitor, subscription_body(base, [user]))
        assert created.status_code == 201
        granted = datetime.fromisoformat(created.json()["expirationDateTime"][:26] + "+00:00")
        assert now + timedelta(minutes=29) < granted <= now + timedelta(minutes=30, seconds=5)
        renewed = client.patch(
            f"/v1.0/subscriptions/{created.json()['id']}",
            json={"expirationDateTime": (now + timedelta(minutes=59)).isoformat()},
            headers=bearer(monitor),
        )
        assert renewed.status_code == 200
        renewed_until = datetime.fromisoformat(renewed.json()["expirationDateTime"][:26] + "+00:00")
        assert renewed_until <= datetime.now(UTC) + timedelta(minutes=30)


def test_renew_answers_404_once_dropped_deleted_or_expired(
    receiver: tuple[Receiver, str],
) -> None:
    _, base = receiver
    with build(max_subscription_minutes=0.005) as ms:
        client = TestClient(ms.app, follow_redirects=False)
        user = ms.add_user(TENANT, "alice@contoso.com")
        monitor = sign_in(client)["access_token"]

        def create() -> str:
            answer = subscribe(client, monitor, subscription_body(base, [user]))
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

        def renew(subscription_id: str, token: str = monitor) -> Any:
            later = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
            return client.patch(
                f"/v1.0/subscriptions/{subscription_id}",
                json={"expirationDateTime": later},
                headers=bearer(token),
            )

        dropped = create()
        ms.drop_subscription(dropped)
        assert graph_code(renew(dropped)) == (404, "ResourceNotFound")
        deleted = create()
        ms.add_user(TENANT, "monitor2@contoso.com")
        stranger = sign_in(client, "monitor2@contoso.com")["access_token"]
        assert renew(deleted, stranger).status_code == 403
        path = f"/v1.0/subscriptions/{deleted}"
        assert client.delete(path, headers=bearer(monitor)).status_code == 204
        assert client.delete(path, headers=bearer(monitor)).status_code == 404
        assert renew(deleted).status_code == 404
        expiring = create()
        gone = f"/v1.0/subscriptions/{expiring}"
        wait_until(lambda: client.get(gone, headers=bearer(monitor)).status_code == 404)
        assert renew(expiring).status_code == 404
        assert ms.subscriptions() == []


def test_push_engine_delivers_basic_notifications_grouped_per_url(
    ms: FakeMicrosoft, client: TestClient, receiver: tuple[Receiver, str]
) -> None:
    endpoint, base = receiver
    alice, bob, carol = ms.add_users(TENANT, 3)
    monitor = sign_in(client)["access_token"]
    created = subscribe(client, monitor, subscription_body(base, [alice, bob]))
    subscription_id = created.json()["id"]
    ms.set_teams_presence(alice, "Busy", "InAMeeting")
    ms.set_teams_presence(bob, "Away", "Away")
    ms.set_teams_presence(carol, "Busy", "InAMeeting")  # not covered: nothing sent
    ms.wait_idle()
    assert len(endpoint.notifications) == 1  # two changes within the window: one POST
    items = endpoint.items()
    assert [item["resourceData"]["id"] for item in items] == [alice, bob]
    item = items[0]
    assert item["subscriptionId"] == subscription_id
    assert item["clientState"] == "secret-client-state"
    assert item["changeType"] == "updated"
    assert item["resource"] == f"communications/presences('{alice}')"
    assert item["tenantId"] == TENANT
    assert item["resourceData"]["@odata.type"] == "#Microsoft.Graph.presence"
    assert "encryptedContent" not in item
    assert "validationTokens" not in endpoint.notifications[0]
    set_presence = client.post(
        f"/v1.0/users/{alice}/presence/setPresence",
        json={"sessionId": CLIENT, "availability": "DoNotDisturb", "activity": "Presenting"},
        headers=bearer(app_token(client)),
    )
    assert set_presence.status_code == 200
    ms.set_teams_presence(bob, "Away", "Away")  # no visible change: no notification
    ms.wait_idle()
    assert [i["resourceData"]["id"] for i in endpoint.items()] == [alice, bob, alice]
    assert [sent["status"] for sent in ms.notifications_sent] == [202, 202]
    assert all(sent["elapsed"] < 3 for sent in ms.notifications_sent)
    ms.set_teams_presence(bob, "Busy", "InACall", notify=False)  # Graph lost it
    ms.wait_idle()
    assert len(endpoint.notifications) == 2
    assert ms.presence(bob)["availability"] == "Busy"  # a read shows the change


def test_failed_deliveries_are_retried_and_dropped_subscriptions_send_nothing(
    receiver: tuple[Receiver, str],
) -> None:
    endpoint, base = receiver
    with build(notification_retry_delays=(0.05,)) as ms:
        client = TestClient(ms.app, follow_redirects=False)
        user = ms.add_user(TENANT, "alice@contoso.com")
        monitor = sign_in(client)["access_token"]
        subscription_id = subscribe(client, monitor, subscription_body(base, [user])).json()["id"]
        endpoint.statuses = [500, 503]
        ms.set_teams_presence(user, "Busy", "InAMeeting")
        ms.wait_idle()
        assert [(s["attempt"], s["status"]) for s in ms.notifications_sent] == [
            (1, 500),
            (2, 503),
            (3, 202),
        ]
        assert len(endpoint.notifications) == 3
        ms.drop_subscription(subscription_id)
        ms.set_teams_presence(user, "Available", "Available")
        ms.wait_idle()
        assert len(endpoint.notifications) == 3


def certificate_pair() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway notifications")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    return key, base64.b64encode(der).decode("ascii")


def test_rich_notification_decrypts_and_its_validation_token_verifies(
    ms: FakeMicrosoft, client: TestClient, receiver: tuple[Receiver, str]
) -> None:
    endpoint, base = receiver
    user = ms.add_user(TENANT, "alice@contoso.com")
    private_key, certificate_b64 = certificate_pair()
    monitor = sign_in(client)["access_token"]
    body = subscription_body(
        base,
        [user],
        includeResourceData=True,
        encryptionCertificate=certificate_b64,
        encryptionCertificateId="cert-1",
    )
    created = subscribe(client, monitor, body)
    assert created.status_code == 201, created.text
    assert created.json()["includeResourceData"] is True
    ms.set_teams_presence(user, "DoNotDisturb", "Presenting")
    ms.wait_idle()
    [notification] = endpoint.notifications
    [item] = notification["value"]
    content = item["encryptedContent"]
    thumbprint = hashlib.sha1(base64.b64decode(certificate_b64)).hexdigest()
    assert content["encryptionCertificateThumbprint"].lower() == thumbprint
    assert content["encryptionCertificateId"] == "cert-1"
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    key = private_key.decrypt(base64.b64decode(content["dataKey"]), oaep)
    assert len(key) == 32
    data = base64.b64decode(content["data"])
    signature = base64.b64encode(hmac.digest(key, data, hashlib.sha256)).decode()
    assert hmac.compare_digest(signature, content["dataSignature"])
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    unpadder = symmetric_padding.PKCS7(128).unpadder()
    plain = unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()
    presence = orjson.loads(plain)
    assert (presence["id"], presence["availability"], presence["activity"]) == (
        user,
        "DoNotDisturb",
        "Presenting",
    )
    [token] = notification["validationTokens"]
    jwks = client.get(f"/{TENANT}/discovery/v2.0/keys").json()
    claims = verify(token, jwks, CLIENT)
    assert claims["appid"] == GRAPH_NOTIFICATIONS_APP_ID
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert claims["exp"] > time.time() + 3000


def test_lifecycle_notifications_and_reauthorize(
    ms: FakeMicrosoft, client: TestClient, receiver: tuple[Receiver, str]
) -> None:
    endpoint, base = receiver
    user = ms.add_user(TENANT, "alice@contoso.com")
    monitor = sign_in(client)["access_token"]
    subscription_id = subscribe(client, monitor, subscription_body(base, [user])).json()["id"]
    assert asyncio.run(ms.send_lifecycle(subscription_id)) == 202
    [event] = endpoint.lifecycle[0]["value"]
    assert event["lifecycleEvent"] == "reauthorizationRequired"
    assert (event["subscriptionId"], event["tenantId"]) == (subscription_id, TENANT)
    assert event["clientState"] == "secret-client-state"
    path = f"/v1.0/subscriptions/{subscription_id}/reauthorize"
    assert client.post(path, headers=bearer(app_token(client))).status_code == 403
    assert client.post(path, headers=bearer(monitor)).status_code == 200
    assert ms.reauthorizations == [subscription_id]
    assert asyncio.run(ms.send_lifecycle(subscription_id, "subscriptionRemoved")) == 202
    assert endpoint.lifecycle[1]["value"][0]["lifecycleEvent"] == "subscriptionRemoved"
    assert client.post(path, headers=bearer(monitor)).status_code == 404
    assert [sent["kind"] for sent in ms.notifications_sent] == ["lifecycle", "lifecycle"]


def test_the_fake_serves_both_base_urls_on_a_real_port(ms: FakeMicrosoft) -> None:
    user = ms.add_user(TENANT, "alice@contoso.com")
    ms.set_teams_presence(user, "Busy", "InAMeeting")
    with serve_app(ms.app) as base, httpx2.Client(base_url=base) as http:
        ms.base_url = base
        token = http.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT,
                "client_secret": SECRET,
                "scope": GRAPH_SCOPE,
            },
        ).json()["access_token"]
        presence = http.get(f"/v1.0/users/{user}/presence", headers=bearer(token))
        assert presence.json()["availability"] == "Busy"
        assert presence.headers["content-type"].startswith("application/json")
