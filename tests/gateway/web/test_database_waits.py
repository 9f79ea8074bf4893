"""While another process holds SQLite's write lock, the server keeps answering: health and
metrics at once, reads as usual, and writes that cannot get the lock in time with 503 and
Retry-After in the caller's format, having written nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app, open_database
from gateway.settings import Settings
from storage.engine import Database
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL, Tenant, new_tenant, user_body
from tests.support.databases import sqlite_url
from tests.support.locker import write_lock_held


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """A SQLite gateway whose writes wait at most two seconds for the lock."""
    return Settings(
        public_url=PUBLIC_URL,
        data_dir=tmp_path / "data",
        database_url=sqlite_url(tmp_path),
        admin_token=ADMIN_TOKEN,
        database_lock_timeout=2.0,
    )


@pytest.fixture
def locked_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_settings), base_url=PUBLIC_URL) as test_client:
        yield test_client


@pytest.fixture
def sqlite_tenant(locked_client: TestClient, sqlite_settings: Settings) -> Iterator[Tenant]:
    db: Database = open_database(sqlite_settings)
    try:
        yield new_tenant(locked_client, db)
    finally:
        db.dispose()


def _database_file(settings: Settings) -> Path:
    return Path(settings.effective_database_url.removeprefix("sqlite:///"))


def test_health_and_metrics_answer_while_a_write_waits_for_the_lock(
    sqlite_settings: Settings, locked_client: TestClient, sqlite_tenant: Tenant
) -> None:
    """/livez and /metrics are answered while a write is still waiting for the held lock."""
    outcome: dict[str, Any] = {}
    with write_lock_held(_database_file(sqlite_settings)):
        writer = threading.Thread(
            target=lambda: outcome.update(response=sqlite_tenant.post("/Users", user_body(1)))
        )
        writer.start()
        health = locked_client.get("/livez")
        metrics = locked_client.get("/metrics")
        write_still_waiting = writer.is_alive()
        writer.join(timeout=30)
    assert health.status_code == 200
    assert metrics.status_code == 200
    assert write_still_waiting
    assert outcome["response"].status_code == 503


def test_a_write_that_cannot_get_the_lock_is_503_with_retry_after_and_writes_nothing(
    sqlite_settings: Settings,
    locked_client: TestClient,
    sqlite_tenant: Tenant,
    admin_headers: dict[str, str],
) -> None:
    """SCIM gets a SCIM error, the admin API a problem; both say when to retry; no row."""
    with write_lock_held(_database_file(sqlite_settings)):
        scim = sqlite_tenant.post("/Users", user_body(1))
        admin = locked_client.post(
            "/api/v1/accounts", json={"name": "Blocked"}, headers=admin_headers
        )
        listed = sqlite_tenant.get("/Users")
    assert scim.status_code == 503
    assert int(scim.headers["retry-after"]) >= 1
    assert scim.headers["content-type"].startswith("application/scim+json")
    assert scim.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert admin.status_code == 503
    assert int(admin.headers["retry-after"]) >= 1
    assert admin.json()["error"] == "unavailable"
    assert listed.status_code == 200
    assert sqlite_tenant.get("/Users").json()["totalResults"] == 0
    names = [
        a["name"]
        for a in locked_client.get("/api/v1/accounts", headers=admin_headers).json()["items"]
    ]
    assert "Blocked" not in names
    assert sqlite_tenant.post("/Users", user_body(1)).status_code == 201
