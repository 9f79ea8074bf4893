"""Logs are JSON lines with a request id, and never carry a token, secret or email."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from gateway.web.routing import TemplateRoute
from observability.logging import configure_logging, get_logger
from tests.conftest import Tenant, user_body


@pytest.fixture
def log_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Route the gateway's configured JSON logs into a buffer, then restore logging."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("INFO")
    yield stream
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    logging.getLogger("uvicorn.access").disabled = False
    structlog.reset_defaults()


def test_access_log_is_json_with_request_id_and_route_template(
    log_stream: io.StringIO, tenant: Tenant
) -> None:
    """Each request writes one JSON line; its request id is the X-Request-ID answered."""
    response = tenant.get("/Users", headers={"X-Request-ID": "req-123"})
    assert response.headers["x-request-id"] == "req-123"
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    [entry] = [line for line in lines if line.get("event") == "request"]
    assert entry["request_id"] == "req-123"
    assert entry["route"] == "/scim/v2/{account_id}/Users"
    assert entry["status"] == 200


def test_logs_never_contain_tokens_or_emails(
    log_stream: io.StringIO, client: TestClient, tenant: Tenant, admin_headers: dict[str, str]
) -> None:
    """After create, conflict, bad token and admin calls, no secret or email is in the log."""
    tenant.post("/Users", user_body(1))
    tenant.post("/Users", user_body(1))
    client.get(tenant.url("/Users"), headers={"Authorization": "Bearer leaked-guess"})
    keys = client.post(
        f"/api/v1/accounts/{tenant.account_id}/integrations/azure_ad_sync/keys",
        headers=admin_headers,
    ).json()
    text = log_stream.getvalue()
    assert text
    for secret in (
        tenant.token,
        keys["secret_token"],
        "leaked-guess",
        admin_headers["Authorization"].split()[1],
        "user1@contoso.example",
    ):
        assert secret not in text


def test_a_bug_is_logged_with_its_request_id_and_answers_500_without_details(
    log_stream: io.StringIO, settings: Settings
) -> None:
    """An unexpected exception answers a generic 500 and is logged as an error."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("internal detail that must not leak")

    app = create_app(settings)
    app.router.routes.append(TemplateRoute("/broken", broken))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert "internal detail" not in response.text
    assert response.json()["error"] == "internal_error"
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    [error] = [line for line in lines if line.get("event") == "unhandled_error"]
    assert error["request_id"] == "bug-1"
    assert error["level"] == "error"
    assert "RuntimeError" in error["exception"]


def test_a_database_error_is_logged_without_the_values_it_quotes(
    log_stream: io.StringIO, settings: Settings
) -> None:
    """A database error's message (which can quote row values) stays out of the log."""

    async def failing(request: Request) -> Response:
        raise IntegrityError(
            "INSERT ...", {}, Exception("Key (value_key)=(leaked@contoso.example) already exists")
        )

    app = create_app(settings)
    app.router.routes.append(TemplateRoute("/failing", failing))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/failing").status_code == 500
    text = log_stream.getvalue()
    assert "unhandled_error" in text
    assert "leaked@contoso.example" not in text


def test_one_log_event_stays_under_64_kb_whatever_it_carries(log_stream: io.StringIO) -> None:
    """A huge value and a deep traceback are cut; the line is valid JSON under 64 KB."""

    def recurse(depth: int) -> None:
        if depth == 0:
            raise RecursionError("deep")
        recurse(depth - 1)

    try:
        recurse(900)
    except RecursionError as exc:
        get_logger("test").error("boom", detail="x" * 500_000, exc_info=exc)
    [line] = [line for line in log_stream.getvalue().splitlines() if '"boom"' in line]
    assert len(line.encode()) < 64 * 1024
    entry = json.loads(line)
    assert entry["detail"].startswith("[")
    assert "RecursionError" in entry["exception"]
