"""A running gateway wired to the fake identity platform and Graph over loopback HTTP.

Each test gets an account with three provisioned users (through the gateway's own SCIM
endpoint, as Entra would), the same users in the fake tenant, and the account's Teams
integration configured with the fake app (CloudLink → Teams on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import create_engine, text

from gateway.settings import Settings
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, user_body
from tests.fakes.loopback import serve_app
from tests.fakes.microsoft import FakeMicrosoft
from tests.support import feed
from tests.support.live import free_port, live_server
from tests.support.server import ServerProcess, server_env, serving

TENANT = "6a1d3f0e-8a41-4d7e-9b55-2f1c0c1b7e01"
CLIENT_ID = "3f2b6c1a-5d4e-4f60-8a7b-9c0d1e2f3a4b"
CLIENT_SECRET = "fake~client~secret~0123456789"
USERS = ("user1@contoso.example", "user2@contoso.example", "user3@contoso.example")


@dataclass
class TeamsStack:
    """The gateway, the fake Microsoft, and the account set up on them."""

    url: str
    http: httpx2.Client
    microsoft: FakeMicrosoft
    microsoft_url: str
    database_url: str = ""
    account_id: str = ""
    teams_ids: dict[str, str] = field(default_factory=dict)
    scim_users: str = ""
    scim_headers: dict[str, str] = field(default_factory=dict)
    # Set when the gateway runs as a process of its own (``process_stack``).
    process: ServerProcess | None = None

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """Run SQL on the gateway's database (to age a certificate, say)."""
        engine = create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def api(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """Call the admin API of the test's account (``path`` after the account)."""
        return self.http.request(method, f"/api/v1/accounts/{self.account_id}{path}", **kwargs)

    def set_teams(self, **overrides: Any) -> httpx2.Response:
        """PUT the Teams integration (the fake app's values unless overridden)."""
        body = {
            "name": "Teams",
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "presence_to_teams": True,
            **overrides,
        }
        return self.api("PUT", "/integrations/microsoft_teams/settings", json=body)

    def feed(self) -> list[dict[str, Any]]:
        """Every event of the account's feed, in order (all committed so far)."""
        return feed.settled(*feed.of_account(self.api))

    def sign_in(self, authorize_url: str) -> httpx2.Response:
        """A browser following a monitor's link: the gateway, Microsoft, back to the gateway
        (a browser waits half a minute for a page, longer than a test machine's busiest moment)."""
        with httpx2.Client(timeout=30, follow_redirects=True) as browser:
            return browser.get(authorize_url)

    def monitors(self) -> dict[str, Any]:
        """The account's monitors, as the API lists them."""
        found: dict[str, Any] = self.api("GET", "/presence/monitors").json()
        return found

    def scim(self, method: str, path: str = "", **kwargs: Any) -> httpx2.Response:
        """Call the account's SCIM ``/Users`` endpoint as Entra would."""
        return self.http.request(
            method, self.scim_users + path, headers=self.scim_headers, **kwargs
        )

    def add_user(self, n: int) -> str:
        """Provision user ``n`` through SCIM and add them to the fake tenant; their email."""
        body = user_body(n)
        email: str = body["emails"][0]["value"]
        self.teams_ids[email] = self.microsoft.add_user(TENANT, email)
        created = self.scim("POST", json=body)
        assert created.status_code == 201, created.text
        return email

    def integration(self, kind: str) -> dict[str, Any] | None:
        """One integration of the account as the API lists it."""
        items = self.api("GET", "/integrations").json()["items"]
        return next((item for item in items if item["kind"] == kind), None)


def provision(stack: TeamsStack, count: int = len(USERS)) -> None:
    """An account whose users came through SCIM, and the same users in the fake tenant
    (``user1@contoso.example``, ...)."""
    stack.account_id = stack.http.post("/api/v1/accounts", json={"name": "Contoso"}).json()["id"]
    stack.api("POST", "/integrations", json={"kind": "azure_ad_sync"})
    keys = stack.api("POST", "/integrations/azure_ad_sync/keys").json()
    stack.scim_users = keys["tenant_url"].removeprefix(stack.url) + "/Users"
    stack.scim_headers = {"Authorization": f"Bearer {keys['secret_token']}"}
    for n in range(1, count + 1):
        stack.add_user(n)


@pytest.fixture
def microsoft() -> Iterator[tuple[FakeMicrosoft, str]]:
    """The fake identity platform and Graph on a loopback port, with the account's app."""
    with FakeMicrosoft() as fake, serve_app(fake.app) as url:
        fake.add_tenant(TENANT)
        fake.base_url = url
        yield fake, url


@pytest.fixture
def teams_settings(
    make_settings: Callable[..., Settings], microsoft: tuple[FakeMicrosoft, str]
) -> Callable[..., Settings]:
    """Settings of a gateway on ``port`` that calls the fake Microsoft."""
    url = microsoft[1]

    def build(port: int, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "public_url": f"http://127.0.0.1:{port}",
            "graph_api_url": url,
            "login_url": url,
            "outbox_poll_seconds": 0.05,
            "outbox_retry_scale": 0.01,
            "send_max_attempts": 4,
            "presence_upkeep_seconds": 1.0,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def process_env(
    tmp_path: Path, database_url: str, microsoft: tuple[FakeMicrosoft, str]
) -> dict[str, str]:
    """The environment of a gateway process (``serve``, alone in its process as in
    production) wired to the fake Microsoft, whose tenant has the account's app."""
    fake, url = microsoft
    fake.add_app(TENANT, CLIENT_ID, CLIENT_SECRET)
    return server_env(
        tmp_path / "data",
        database_url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        GATEWAY_GRAPH_API_URL=url,
        GATEWAY_LOGIN_URL=url,
        GATEWAY_OUTBOX_POLL_SECONDS="0.05",
        GATEWAY_OUTBOX_RETRY_SCALE="0.01",
        GATEWAY_OUTBOX_LEASE_SECONDS="5",
        GATEWAY_PRESENCE_UPKEEP_SECONDS="1",
    )


@contextmanager
def process_stack(
    env: dict[str, str], microsoft: tuple[FakeMicrosoft, str], output: Path | None = None
) -> Iterator[TeamsStack]:
    """A gateway process serving ``env``, with the account and its users provisioned; what
    it logs goes to ``output`` if given."""
    with (
        serving(env, output=output) as server,
        httpx2.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as http,
    ):
        stack = TeamsStack(
            url=server.url,
            http=http,
            microsoft=microsoft[0],
            microsoft_url=microsoft[1],
            database_url=env["GATEWAY_DATABASE_URL"],
            process=server,
        )
        yield stack


@pytest.fixture
def stack_overrides() -> dict[str, Any]:
    """Settings a test changes (parametrize it to override)."""
    return {}


@pytest.fixture
def teams_stack(
    teams_settings: Callable[..., Settings],
    microsoft: tuple[FakeMicrosoft, str],
    stack_overrides: dict[str, Any],
) -> Iterator[TeamsStack]:
    """A live gateway whose account has provisioned users and its app in the fake tenant."""
    fake, fake_url = microsoft
    port = free_port()
    settings = teams_settings(port, **stack_overrides)
    fake.add_app(
        TENANT,
        CLIENT_ID,
        CLIENT_SECRET,
        redirect_uris=[
            f"http://127.0.0.1:{port}/oauth/office365",
            f"http://127.0.0.1:{port}/oauth/monitor",
        ],
    )
    with (
        live_server(settings, port) as url,
        httpx2.Client(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as http,
    ):
        stack = TeamsStack(
            url=url,
            http=http,
            microsoft=fake,
            microsoft_url=fake_url,
            database_url=settings.effective_database_url,
        )
        provision(stack)
        yield stack
