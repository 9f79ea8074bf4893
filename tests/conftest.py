"""Fixtures shared by every test: settings, real databases, apps and clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.accounts import service as accounts
from gateway.app import create_app
from gateway.events.service import OPERATOR_CLI
from gateway.settings import Settings
from storage.engine import Database, make_engine
from storage.migrate import upgrade
from tests.fakes.cmcom import FakeCM
from tests.fakes.loopback import serve_apps
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.twilio import FakeTwilio
from tests.support.databases import PostgresFactory, backend_database, postgres_admin_url
from tests.support.sync import run

ADMIN_TOKEN = "test-operator-token-0123456789abcdef"
PUBLIC_URL = "http://gateway.test"
SECRET_KEY = "tDC1qomeyDzEI3V1fSPZ2gVYQj2bBV6hYMQ_IVBWRYk="
# Wrong tokens a client may present before it is held back, by default.
FAILURE_BURST: int = Settings.model_fields["auth_failure_burst"].default
# Every database test runs once per backend. PostgreSQL is there when the libpq variables
# (or GATEWAY_TEST_POSTGRES_URL) name a server, as `make test` does through pg_virtualenv;
# `make test-sqlite` runs without it, and GATEWAY_TEST_REQUIRE_POSTGRES makes its absence
# an error instead.
if postgres_admin_url() is None and os.environ.get("GATEWAY_TEST_REQUIRE_POSTGRES"):
    raise RuntimeError("GATEWAY_TEST_REQUIRE_POSTGRES is set but no PostgreSQL is configured")
BACKENDS = ["sqlite", "postgresql"] if postgres_admin_url() is not None else ["sqlite"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresFactory | None]:
    """The PostgreSQL test server, or None when there is none."""
    url = postgres_admin_url()
    if url is None:
        yield None
        return
    factory = PostgresFactory(url)
    yield factory
    factory.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on PostgreSQL run one after the other, on one worker of a parallel run.

    The feed shows an event once every older transaction of the whole PostgreSQL server
    has ended (decision 0011): a test holding a transaction open in its own database would
    otherwise hold back the feed another worker's test is reading. SQLite tests, each on
    a file of its own, fill the other workers.

    A test marked ``one_backend`` checks what does not depend on the database (a refusal
    made before anything is stored, a provider's answer): its PostgreSQL variant is left
    out, as it would only lengthen that one worker's queue.
    """
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgresql" in callspec.params.values()
        if on_postgres and item.get_closest_marker("one_backend") is not None:
            dropped.append(item)
            continue
        if on_postgres:
            item.add_marker(pytest.mark.xdist_group("postgresql"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def postgres_of(request: pytest.FixtureRequest) -> Callable[[], PostgresFactory | None]:
    """The session's PostgreSQL, started only when a test asks for it."""
    return lambda: request.getfixturevalue("postgres")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each backend: the test runs once on SQLite, once on PostgreSQL."""
    with backend_database(request.param, tmp_path, postgres_of(request)) as url:
        yield url


@dataclass
class QuietProviders:
    """Fake Twilio, CM.com and Microsoft APIs that every app of the run calls by default."""

    twilio: FakeTwilio
    cm: FakeCM
    microsoft: FakeMicrosoft
    urls: dict[str, str]


@pytest.fixture(scope="session")
def quiet_providers() -> Iterator[QuietProviders]:
    """No test reaches the real services; a test that scripts a provider's answers starts
    fakes of its own."""
    # Their sends are never followed: no window to keep.
    twilio, cm = FakeTwilio(enforce_window=False), FakeCM()
    with (
        FakeMicrosoft() as microsoft,
        serve_apps(twilio.app, cm.app, microsoft.app) as [twilio_url, cm_url, microsoft_url],
    ):
        yield QuietProviders(
            twilio,
            cm,
            microsoft,
            {
                "twilio_api_url": twilio_url,
                "twilio_content_url": twilio_url,
                "cm_api_url": cm_url,
                "graph_api_url": microsoft_url,
                "login_url": microsoft_url,
            },
        )


@pytest.fixture
def make_settings(
    tmp_path: Path, database_url: str, quiet_providers: QuietProviders
) -> Callable[..., Settings]:
    """Build settings for the test's database, with overrides."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **quiet_providers.urls,
            "public_url": PUBLIC_URL,
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "admin_token": ADMIN_TOKEN,
            "secret_keys": [SECRET_KEY],
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default settings on the test's database."""
    return make_settings()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """A migrated database handle, for arranging state directly."""
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    database = Database(engine)
    yield database
    database.dispose()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of a running app (lifespan entered)."""
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as test_client:
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    """Operator credentials for the admin API."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Tenant:
    """An account with SCIM keys, and a helper to call its SCIM endpoints."""

    def __init__(self, client: TestClient, account_id: str, tenant_url: str, token: str) -> None:
        self.client = client
        self.account_id = account_id
        self.tenant_url = tenant_url
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/scim+json"}

    def url(self, path: str) -> str:
        return self.tenant_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, self.url(path), headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PATCH", path, json=body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def filter(self, expression: str, **params: Any) -> Any:
        response = self.get("/Users", params={"filter": expression, **params})
        assert response.status_code == 200, response.text
        return response.json()


def new_tenant(client: TestClient, db: Database, name: str = "Acme") -> Tenant:
    """Create an account and generate its SCIM keys, as an operator would."""
    account = run(accounts.create_account(db, name=name, actor=OPERATOR_CLI))
    keys = run(
        accounts.generate_scim_keys(
            db, account_id=account.id, actor=OPERATOR_CLI, public_url=PUBLIC_URL
        )
    )
    return Tenant(client, account.id, keys.tenant_url, keys.secret_token)


@pytest.fixture
def tenant(client: TestClient, db: Database) -> Tenant:
    """A provisioned account ready for SCIM calls."""
    return new_tenant(client, db)


def user_body(n: int | str = 1, **extra: Any) -> dict[str, Any]:
    """A valid Entra-style POST /Users body."""
    body: dict[str, Any] = {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ],
        "externalId": f"ext-{n}",
        "userName": f"user{n}@contoso.example",
        "active": True,
        "displayName": f"User {n}",
        "emails": [{"primary": True, "type": "work", "value": f"user{n}@contoso.example"}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": f"Given{n} Family{n}",
            "familyName": f"Family{n}",
            "givenName": f"Given{n}",
        },
    }
    body.update(extra)
    return body
