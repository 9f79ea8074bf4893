"""The console over HTTP: sign-in and sessions, CSRF, headers, and each page's action
through the admin API's service functions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from storage.engine import Database
from storage.tables import CONSOLE_SESSIONS, utcnow
from storage.transaction import Transaction
from tests.conftest import ADMIN_TOKEN, run, user_body
from tests.gateway.console.conftest import HOSTILE, csrf_of, sign_in


def _accounts(console: TestClient, admin: dict[str, str]) -> list[dict[str, str]]:
    items: list[dict[str, str]] = console.get("/api/v1/accounts", headers=admin).json()["items"]
    return items


def test_pages_ask_to_sign_in_first(console: TestClient) -> None:
    """A page without a session redirects to the sign-in form, keeping where it was going."""
    answer = console.get("/admin/accounts?q=x", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/sign-in?next=%2Fadmin%2Faccounts%3Fq%3Dx"
    htmx = console.get("/admin/accounts", headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.headers["HX-Redirect"].startswith("/admin/sign-in?next=")


def test_a_wrong_token_is_refused_and_starts_no_session(console: TestClient) -> None:
    page = console.get("/admin/sign-in")
    answer = console.post(
        "/admin/sign-in",
        data={"csrf": csrf_of(page.text), "token": "not-the-operator-token-at-all-000000"},
    )
    assert answer.status_code == 401
    assert "The operator token is not valid." in answer.text
    assert "gateway_console" not in console.cookies
    assert console.get("/admin/accounts", follow_redirects=False).status_code == 303


def test_sign_in_without_its_form_token_is_refused(console: TestClient) -> None:
    """The sign-in form's CSRF value must match its cookie (no session holds one yet)."""
    console.get("/admin/sign-in")
    answer = console.post("/admin/sign-in", data={"csrf": "forged", "token": ADMIN_TOKEN})
    assert answer.status_code == 403
    assert "gateway_console" not in console.cookies


def test_each_sign_in_gets_a_new_session_id_and_a_strict_http_only_cookie(
    console: TestClient,
) -> None:
    console.cookies.set("gateway_console", "chosen-by-an-attacker", domain="gateway.test")
    page = console.get("/admin/sign-in")
    answer = console.post(
        "/admin/sign-in",
        data={"csrf": csrf_of(page.text), "token": ADMIN_TOKEN},
        follow_redirects=False,
    )
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/admin" in cookie
    assert "Secure" not in cookie  # the public URL is http here
    assert "chosen-by-an-attacker" not in cookie


def test_the_cookie_is_secure_when_the_public_url_is_https(
    make_settings: Callable[..., Settings],
) -> None:
    https = make_settings(public_url="https://gateway.example")
    with TestClient(create_app(https), base_url="https://gateway.example") as client:
        page = client.get("/admin/sign-in")
        answer = client.post(
            "/admin/sign-in",
            data={"csrf": csrf_of(page.text), "token": ADMIN_TOKEN},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert "Secure" in answer.headers["set-cookie"]


def test_sign_out_ends_the_session_on_the_server(console: TestClient) -> None:
    csrf = sign_in(console)
    stolen = console.cookies["gateway_console"]
    answer = console.post("/admin/sign-out", data={"csrf": csrf})
    assert answer.status_code == 200
    assert "Signed out." in answer.text
    console.cookies.set("gateway_console", stolen, domain="gateway.test", path="/admin")
    again = console.get("/admin/accounts", follow_redirects=False)
    assert again.status_code == 303
    assert "/admin/sign-in" in again.headers["location"]


@pytest.mark.parametrize("column", ["seen_at", "created_at"])
def test_an_idle_or_old_session_ends(console: TestClient, db: Database, column: str) -> None:
    """Unused past GATEWAY_CONSOLE_IDLE_MINUTES (30), or older than
    GATEWAY_CONSOLE_SESSION_HOURS (12): the next page asks to sign in again."""
    sign_in(console)
    assert console.get("/admin/accounts", follow_redirects=False).status_code == 200
    back = timedelta(minutes=31) if column == "seen_at" else timedelta(hours=12, minutes=1)

    def age(tx: Transaction) -> None:
        tx.conn.execute(update(CONSOLE_SESSIONS).values({column: utcnow() - back}))

    run(db.transact(age))
    answer = console.get("/admin/accounts")
    assert answer.url.path == "/admin/sign-in"
    assert "Your session has ended; sign in again." in answer.text


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    console: TestClient, admin_headers: dict[str, str]
) -> None:
    csrf = sign_in(console)
    for extra in ({}, {"csrf": "wrong"}):
        answer = console.post("/admin/accounts", data={"name": "Forged", **extra})
        assert answer.status_code == 403
        assert "nothing was changed" in answer.text
    assert _accounts(console, admin_headers) == []
    header = console.post(
        "/admin/accounts", data={"name": "By htmx"}, headers={"X-CSRF-Token": csrf}
    )
    assert header.status_code == 200
    assert [a["name"] for a in _accounts(console, admin_headers)] == ["By htmx"]


def test_pages_forbid_framing_inline_script_and_caching(console: TestClient) -> None:
    sign_in(console)
    for path in ("/admin/sign-in", "/admin/accounts"):
        headers = console.get(path).headers
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
    script = console.get(console.get("/admin/accounts").text.split('src="')[1].split('"')[0])
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")


def test_accounts_are_created_renamed_searched_and_paged(
    console: TestClient, admin_headers: dict[str, str]
) -> None:
    csrf = sign_in(console)
    created = console.post("/admin/accounts", data={"csrf": csrf, "name": "Contoso"})
    assert created.status_code == 200
    assert "Account created." in created.text
    account_id = created.url.path.rsplit("/", 1)[1]
    renamed = console.post(
        f"/admin/accounts/{account_id}/name", data={"csrf": csrf, "name": "Contoso Ltd"}
    )
    assert "Account renamed." in renamed.text
    for n in range(55):
        console.post("/admin/accounts", data={"csrf": csrf, "name": f"Tenant {n:02d}"})
    first = console.get("/admin/accounts")
    assert "56 accounts" in first.text
    assert "page 1 of 2" in first.text
    second = console.get("/admin/accounts?page=2")
    assert "Tenant 54" in second.text
    assert "Contoso Ltd" not in second.text
    found = console.get("/admin/accounts", params={"q": "contoso"})
    assert "1 accounts" in found.text
    assert "Contoso Ltd" in found.text
    by_id = console.get("/admin/accounts", params={"q": account_id})
    assert "Contoso Ltd" in by_id.text
    wildcard = console.get("/admin/accounts", params={"q": "%"})
    assert "0 accounts" in wildcard.text
    names = {a["name"] for a in _accounts(console, admin_headers)}
    assert "Contoso Ltd" in names
    assert len(names) == 56


def test_a_service_refusal_is_shown_with_its_status(console: TestClient) -> None:
    csrf = sign_in(console)
    blank = console.post("/admin/accounts", data={"csrf": csrf, "name": "   "})
    assert blank.status_code == 400
    assert "name must not be empty." in blank.text
    missing = console.get("/admin/accounts/no-such-account")
    assert missing.status_code == 404


def test_hostile_names_are_shown_as_text(console: TestClient) -> None:
    csrf = sign_in(console)
    page = console.post("/admin/accounts", data={"csrf": csrf, "name": HOSTILE})
    assert "<script>alert(1)" not in page.text
    assert "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x" in page.text


def test_scim_keys_are_confirmed_then_shown_once_and_work(
    console: TestClient, admin_headers: dict[str, str]
) -> None:
    csrf = sign_in(console)
    account_id = console.post(
        "/admin/accounts", data={"csrf": csrf, "name": "Fabrikam"}
    ).url.path.rsplit("/", 1)[1]
    confirm = console.get(f"/admin/accounts/{account_id}/scim-keys")
    assert "Only generate keys as needed." in confirm.text
    assert "Secret Token" not in confirm.text
    shown = console.post(
        f"/admin/accounts/{account_id}/scim-keys", data={"csrf": csrf, "confirm": "yes"}
    )
    assert shown.status_code == 200
    assert shown.url.path.endswith("/scim-keys/shown")  # a GET after the change
    assert shown.headers["cache-control"] == "no-store"
    token = shown.text.split('id="secret-token" readonly value="')[1].split('"')[0]
    tenant_url = shown.text.split('id="tenant-url" readonly value="')[1].split('"')[0]
    assert tenant_url.endswith(f"/scim/v2/{account_id}")
    scim = console.post(
        tenant_url.replace("http://gateway.test", "") + "/Users",
        json=user_body(1),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert scim.status_code == 201, scim.text
    again = console.get(shown.url.path)
    assert token not in again.text
    assert again.url.path == f"/admin/accounts/{account_id}"
    page = console.get(f"/admin/accounts/{account_id}")
    assert token not in page.text
    assert "keys generated" in page.text
    events = console.get(f"/admin/accounts/{account_id}/events")
    assert "user.created" in events.text
    assert token not in events.text


def test_integrations_are_added_and_removed_after_a_confirmation(console: TestClient) -> None:
    csrf = sign_in(console)
    base = console.post("/admin/accounts", data={"csrf": csrf, "name": "Northwind"}).url.path
    added = console.post(base + "/integrations", data={"csrf": csrf, "kind": "twilio"})
    assert "Integration added." in added.text
    assert "setup incomplete" in added.text
    confirm = console.get(base + "/integrations/twilio/remove")
    assert "Remove Twilio?" in confirm.text
    unconfirmed = console.post(base + "/integrations/twilio/remove", data={"csrf": csrf})
    assert "Remove Twilio?" in unconfirmed.text
    removed = console.post(
        base + "/integrations/twilio/remove", data={"csrf": csrf, "confirm": "yes"}
    )
    assert "Integration removed." in removed.text
    assert "No integration yet." in removed.text


def test_events_are_filtered_paged_and_exported_as_the_api_exports_them(
    console: TestClient, admin_headers: dict[str, str]
) -> None:
    csrf = sign_in(console)
    base = console.post("/admin/accounts", data={"csrf": csrf, "name": "Litware"}).url.path
    account_id = base.rsplit("/", 1)[1]
    for n in range(60):
        console.post(base + "/name", data={"csrf": csrf, "name": f"Litware {n}"})
    page = console.get(base + "/events", params={"action": "Edit"})
    assert page.text.count("account.updated") == 50
    assert "account.created" not in page.text
    older = page.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = console.get(older.replace("&amp;", "&"))
    assert second.text.count("account.updated") == 10
    created = console.get(base + "/events", params={"action": "Create", "tz": "60"})
    assert "account.created" in created.text
    exported = console.get(base + "/events.csv", params={"action": "Edit", "actor": "Operator"})
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    api = console.get(
        f"/api/v1/accounts/{account_id}/events.csv",
        params={"action": "Edit", "actor": "Operator"},
        headers=admin_headers,
    )
    assert exported.text == api.text
    assert exported.text.count("\n") == 61
    window = console.get(
        base + "/events", params={"since": "2000-01-01T00:00", "until": "2000-01-02T00:00"}
    )
    assert "No event matches." in window.text
    bad = console.get(base + "/events", params={"since": "yesterday"})
    assert bad.status_code == 400


def test_the_console_speaks_french(console: TestClient) -> None:
    sign_in(console)
    switched = console.get("/admin/language", params={"to": "fr", "next": "/admin/accounts"})
    assert '<html lang="fr">' in switched.text
    assert "Comptes" in switched.text
    assert "Nouveau compte" in switched.text
    elsewhere = console.get("/admin/language", params={"to": "en", "next": "https://evil.test/"})
    assert elsewhere.url.path == "/admin/accounts"
    assert '<html lang="en">' in elsewhere.text


def test_a_french_browser_gets_french_before_signing_in(console: TestClient) -> None:
    page = console.get("/admin/sign-in", headers={"Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5"})
    assert '<html lang="fr">' in page.text
    assert "Se connecter" in page.text
