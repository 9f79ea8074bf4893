"""The console in a real browser: Debian's chromium driven by Playwright, against a
``serve`` process on the embedded default.

A new admin signs in, creates an account, generates its SCIM keys, provisions a user
through SCIM and finds it in Events, and exports the events as CSV; connects Twilio, adds
a WhatsApp channel, sees an inbound message arrive, replies and sees it delivered; adds
a CloudLink endpoint, sees a dead letter when the receiver fails, and replays it. The
checks around it are CSRF, hostile text shown as text, the clickjacking headers,
sign-out and an ended session. The fakes (Twilio, CM.com, the CloudLink receiver) run
in the test's process; the gateway calls them over loopback HTTP. Every page is checked
with axe-core (WCAG 2.1 A and AA rules) and photographed into ``build/console/``
(``GATEWAY_CONSOLE_SCREENSHOTS`` to move it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import update

from storage.engine import make_engine
from storage.tables import CONSOLE_SESSIONS, utcnow
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, user_body
from tests.fakes.cloudlink import FakeCloudLink
from tests.fakes.cmcom import FakeCM
from tests.fakes.loopback import serve_apps
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.twilio import FakeTwilio, new_sid, sign_twilio
from tests.gateway.console.conftest import HOSTILE
from tests.gateway.presence.conftest import CLIENT_ID, CLIENT_SECRET, TENANT
from tests.support.databases import sqlite_url
from tests.support.live import free_port
from tests.support.server import ServerProcess, server_env, serving
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[3]
SHOTS = Path(os.environ.get("GATEWAY_CONSOLE_SCREENSHOTS", ROOT / "build" / "console"))
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}

# One worker runs them one after another: each drives a browser of several processes.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("GATEWAY_TEST_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (Debian: apt-get install chromium).")
        pytest.skip("Debian's chromium is not installed here (apt-get install chromium).")
    return path


@dataclass
class Fakes:
    """The providers the gateway calls, and where they listen."""

    twilio: FakeTwilio
    cloudlink: FakeCloudLink
    cloudlink_url: str
    microsoft: FakeMicrosoft


@dataclass
class Console:
    """The browser's page on a running gateway, and what the scenario noticed."""

    server: ServerProcess
    page: Page
    database: str
    fakes: Fakes
    dialogs: list[str] = field(default_factory=list)
    axe: Axe = field(default_factory=Axe)

    def go(self, path: str) -> None:
        self.page.goto(self.server.url + path)

    def check(self, name: str) -> None:
        """The page passes axe's WCAG 2.1 AA rules, and is photographed."""
        results = self.axe.run(self.page, options=WCAG)
        assert results.violations_count == 0, results.generate_report()
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def sign_in(self, token: str = ADMIN_TOKEN) -> None:
        self.go("/admin")
        self.page.get_by_label("Operator token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    executable = _chromium()
    database = sqlite_url(tmp_path / "data")
    twilio = FakeTwilio(auto_status=["sent", "delivered"], auto_status_delay=0.3)
    cloudlink = FakeCloudLink()
    port = free_port()
    with (
        FakeMicrosoft() as microsoft,
        serve_apps(twilio.app, FakeCM().app, cloudlink.app, microsoft.app) as [
            twilio_url,
            cm_url,
            cl_url,
            microsoft_url,
        ],
    ):
        microsoft.add_tenant(TENANT)
        microsoft.base_url = microsoft_url
        microsoft.add_app(TENANT, CLIENT_ID, CLIENT_SECRET)
        env = server_env(
            tmp_path / "data",
            database,
            admin_token=ADMIN_TOKEN,
            secret_key=SECRET_KEY,
            GATEWAY_PUBLIC_URL=f"http://127.0.0.1:{port}",
            GATEWAY_TWILIO_API_URL=twilio_url,
            GATEWAY_TWILIO_CONTENT_URL=twilio_url,
            GATEWAY_CM_API_URL=cm_url,
            GATEWAY_ALLOW_PRIVATE_ENDPOINTS="true",
            GATEWAY_OUTBOX_POLL_SECONDS="0.05",
            GATEWAY_OUTBOX_RETRY_SCALE="0.01",
            GATEWAY_EVENT_MAX_ATTEMPTS="2",
            GATEWAY_GRAPH_API_URL=microsoft_url,
            GATEWAY_LOGIN_URL=microsoft_url,
            GATEWAY_PRESENCE_UPKEEP_SECONDS="1",
        )
        with serving(env, port=port) as server, sync_playwright() as playwright:
            browser: Browser = playwright.chromium.launch(
                executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
            )
            context = browser.new_context(
                accept_downloads=True, locale="en-GB", timezone_id="Europe/Paris"
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            found = Console(server, page, database, Fakes(twilio, cloudlink, cl_url, microsoft))
            page.on(
                "dialog", lambda dialog: (found.dialogs.append(dialog.message), dialog.dismiss())
            )
            try:
                yield found
            finally:
                context.close()
                browser.close()


def _scim(tenant_url: str, server: ServerProcess, token: str, body: dict[str, Any]) -> Any:
    """A SCIM request as Entra sends it, to the tenant URL's path on this server."""
    path = "/scim/v2/" + tenant_url.split("/scim/v2/", 1)[1]
    with httpx2.Client(base_url=server.url, timeout=10) as http:
        return http.post(
            path + "/Users",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        )


def test_a_new_admin_provisions_an_account_and_reads_its_events(console: Console) -> None:
    page = console.page
    console.go("/admin")
    assert page.url.endswith("/admin/sign-in?next=%2Fadmin%2Faccounts")
    console.check("sign-in")
    console.sign_in()
    page.get_by_role("heading", name="Accounts").wait_for()
    console.check("accounts")

    page.get_by_label("Name", exact=True).fill("Contoso")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Account created.").wait_for()
    page.get_by_label("Add an integration").select_option("azure_ad_sync")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Integration added.").wait_for()
    console.check("account")

    page.get_by_role("link", name="Generate keys").click()
    page.get_by_text("Only generate keys as needed.").wait_for()
    console.check("scim-keys-confirm")
    page.get_by_role("button", name="Generate keys").click()
    token = page.get_by_label("Secret Token").input_value()
    tenant_url = page.get_by_label("Tenant URL").input_value()
    assert len(token) >= 32
    page.get_by_role("button", name="Copy").first.click()
    console.check("scim-keys")
    page.reload()  # shown once: a reload neither shows the token again nor makes new keys
    assert token not in page.content()
    assert "/scim-keys" not in page.url

    hostile_user = user_body(1, userName=HOSTILE, displayName=HOSTILE)
    created = _scim(tenant_url, console.server, token, hostile_user)
    assert created.status_code == 201, created.text
    page.get_by_role("link", name="Events").click()
    page.get_by_text("user.created").wait_for()
    page.get_by_text("user.created").click()  # opens the event's details
    assert json.dumps(HOSTILE) in page.locator("pre").first.inner_text()  # as JSON text
    assert console.dialogs == []
    assert page.locator("img[src=x]").count() == 0
    # Times in the browser's zone (Paris), not in UTC.
    shown = page.locator("time").first
    assert "UTC" not in shown.inner_text()
    console.check("events")

    page.get_by_label("Action").select_option("Create")
    page.get_by_label("Type").select_option("Provisioning")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**event_type=Provisioning**")
    assert page.get_by_text("account.created").count() == 0
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [row["type"] for row in rows] == ["user.created"]
    assert download.value.suggested_filename.startswith("events-")


def test_the_console_in_french(console: Console) -> None:
    console.sign_in()
    console.page.get_by_role("link", name="Français").click()
    console.page.get_by_role("heading", name="Comptes").wait_for()
    assert console.page.locator("html").get_attribute("lang") == "fr"
    console.check("accounts-fr")


def test_a_form_posted_without_its_token_is_refused_and_changes_nothing(
    console: Console,
) -> None:
    console.sign_in()
    page = console.page
    page.get_by_role("heading", name="Accounts").wait_for()
    page.locator("form:has(#name) input[name=csrf]").evaluate("node => node.value = 'forged'")
    page.get_by_label("Name", exact=True).fill("Forged")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("nothing was changed").wait_for()
    console.go("/admin/accounts")
    assert page.get_by_text("0 accounts").count() == 1


def test_hostile_account_names_are_shown_as_text_and_pages_refuse_frames(
    console: Console,
) -> None:
    console.sign_in()
    page = console.page
    page.get_by_label("Name", exact=True).fill(HOSTILE)
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name=HOSTILE).wait_for()
    assert console.dialogs == []
    assert page.locator("img[src=x]").count() == 0
    answer = page.request.get(console.server.url + "/admin/accounts")
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    # A page of another origin cannot frame the console.
    page.set_content(f'<iframe src="{console.server.url}/admin/accounts"></iframe>')
    frame = page.frames[-1]
    assert frame.url in ("about:blank", "chrome-error://chromewebdata/") or not frame.content()


def test_sign_out_and_an_ended_session_lead_back_to_sign_in(console: Console) -> None:
    console.sign_in()
    page = console.page
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("Signed out.").wait_for()
    console.go("/admin/accounts")
    assert "/admin/sign-in" in page.url

    console.sign_in()
    page.get_by_role("heading", name="Accounts").wait_for()
    engine = make_engine(console.database)
    try:
        with engine.begin() as conn:  # an hour unused, as if the admin had left
            conn.execute(update(CONSOLE_SESSIONS).values(seen_at=utcnow() - timedelta(hours=1)))
    finally:
        engine.dispose()
    console.go("/admin/accounts")
    page.get_by_text("Your session has ended; sign in again.").wait_for()


TWILIO_SID = "AC" + "2e" * 16
TWILIO_TOKEN = "browser-twilio-auth-token-0123456789"
BUSINESS = "+14155550100"
CUSTOMER = "+31612345678"


def _whatsapp_from_customer(console: Console, webhook_url: str, text: str, name: str) -> None:
    """A signed inbound WhatsApp message, as Twilio posts it to the channel's URL."""
    params = console.fakes.twilio.inbound_params(
        account_sid=TWILIO_SID,
        from_="whatsapp:" + CUSTOMER,
        to="whatsapp:" + BUSINESS,
        body=text,
        message_sid=new_sid("SM"),
        profile_name=name,
        media=(),
        extra=None,
    )
    signature = sign_twilio(TWILIO_TOKEN, webhook_url, params)
    answer = httpx2.post(webhook_url, data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200, answer.text


def test_an_admin_connects_twilio_answers_a_customer_and_replays_a_dead_letter(
    console: Console,
) -> None:
    twilio = console.fakes.twilio
    twilio.add_account(TWILIO_SID, TWILIO_TOKEN)
    twilio.add_number(TWILIO_SID, BUSINESS)
    page = console.page
    console.sign_in()
    page.get_by_label("Name", exact=True).fill("Fabrikam")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("link", name="Channels").click()
    page.get_by_role("link", name="Twilio settings").click()
    page.get_by_label("Name").fill("Fabrikam Twilio")
    page.get_by_label("Account SID").fill(TWILIO_SID)
    page.get_by_label("Auth Token").fill(TWILIO_TOKEN)
    console.check("twilio-settings")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Settings saved.").wait_for()
    assert TWILIO_TOKEN not in page.content()
    assert page.locator(f'#numbers option[value="{BUSINESS}"]').count() == 1
    page.get_by_label("Type").select_option("whatsapp")
    page.get_by_label("Number", exact=True).fill(BUSINESS)
    page.get_by_label("Queue id").fill("queue-7")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Channel added.").wait_for()
    console.check("channels")
    webhook_url = page.get_by_label("Webhook URL").first.input_value()
    assert "/webhooks/twilio/" in webhook_url

    _whatsapp_from_customer(console, webhook_url, HOSTILE, name=HOSTILE)
    page.get_by_role("link", name="Conversations").click()
    page.get_by_role("link", name=HOSTILE).wait_for()
    console.check("conversations")
    page.get_by_role("link", name=HOSTILE).click()
    page.get_by_text(HOSTILE, exact=True).first.wait_for()
    assert console.dialogs == []
    assert page.locator("img[src=x]").count() == 0
    page.get_by_label("Reply").fill("Thanks, we are on it")
    page.get_by_role("button", name="Send").click()
    page.get_by_text("Reply queued.").wait_for()
    # The list refreshes itself while the reply is on its way: no reload.
    page.locator('[data-status="delivered"]').wait_for(timeout=20_000)
    assert twilio.sent[0]["body"] == "Thanks, we are on it"
    console.check("conversation")

    page.get_by_role("link", name="Endpoints").click()
    console.fakes.cloudlink.fail_always(500)  # the receiver is down from the start
    page.get_by_label("Endpoint URL").fill(console.fakes.cloudlink_url + "/events")
    page.get_by_role("button", name="Add", exact=True).click()
    secret = page.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    console.check("endpoint-added")
    page.reload()  # the secret is not shown again, and no second endpoint is added
    assert secret not in page.content()
    console.fakes.cloudlink.set_secret("/events", secret)
    _whatsapp_from_customer(console, webhook_url, "Anyone there?", name="Ada")

    def dead_letters_shown() -> bool:
        # endpoint.created and message.received, each out of attempts
        page.reload()
        return page.locator("input[type=checkbox][name^=dl-]").count() == 2

    eventually(dead_letters_shown, what="two dead letters on the endpoints page")
    console.check("endpoints")
    console.fakes.cloudlink.recover()
    for box in page.locator("input[type=checkbox][name^=dl-]").all():
        box.check()
    page.get_by_role("button", name="Replay the ticked ones").click()
    page.get_by_text("Dead letters queued again.").wait_for()
    eventually(
        lambda: any(
            e["data"].get("text") == "Anyone there?"
            for e in console.fakes.cloudlink.events("message.received")
        ),
        what="the replayed event delivered",
    )


def test_an_admin_sets_up_teams_and_authorizes_a_presence_monitor(console: Console) -> None:
    microsoft = console.fakes.microsoft
    admin = httpx2.Client(
        base_url=console.server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with admin:
        account_id = admin.post("/api/v1/accounts", json={"name": "Northwind"}).json()["id"]
        keys = admin.post(f"/api/v1/accounts/{account_id}/integrations/azure_ad_sync/keys").json()
    for n in (1, 2):
        body = user_body(n)
        microsoft.add_user(TENANT, body["userName"])
        created = _scim(keys["tenant_url"], console.server, keys["secret_token"], body)
        assert created.status_code == 201, created.text
    microsoft.add_user(TENANT, "monitor@contoso.example")

    page = console.page
    console.sign_in()
    console.go(f"/admin/accounts/{account_id}/teams")
    page.get_by_label("Name", exact=True).fill("Teams")
    page.get_by_label("Directory (tenant) ID").fill(TENANT)
    page.get_by_label("Application (client) ID").fill(CLIENT_ID)
    page.get_by_label("Client secret").fill(CLIENT_SECRET)
    page.get_by_label("Secret expires on").fill("2031-01-31")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Settings saved.").wait_for()
    assert CLIENT_SECRET not in page.content()
    page.get_by_label("Monitor's Teams user (UPN)").fill("monitor@contoso.example")
    page.get_by_role("button", name="Add", exact=True).click()
    link = page.get_by_label("Authorize link").input_value()
    console.check("teams-monitor-added")
    # The monitor's user opens the link: Microsoft's sign-in, then back to the gateway.
    page.goto(link)
    page.get_by_text("is authorized").wait_for()
    console.go(f"/admin/accounts/{account_id}/teams")
    # The list refreshes itself until the subscription is made: no reload.
    page.locator('[data-monitor-status="subscribed"]').wait_for(timeout=30_000)
    page.get_by_role("button", name="Run the system check").click()
    page.get_by_role("cell", name="notification_url").wait_for()
    console.check("teams")
    page.get_by_role("button", name="Sync all").click()
    page.get_by_text("Sync all started.").wait_for()
    page.get_by_label("Email").fill(user_body(1)["userName"])
    page.get_by_role("button", name="Show").click()
    page.locator("caption", has_text=user_body(1)["userName"]).wait_for()
    console.go(f"/admin/accounts/{account_id}/office365")
    page.get_by_role("button", name="Request admin consent").click()
    assert "adminconsent" in page.locator("#consent-url").input_value()
    console.check("office365")
