"""A refused request leaves the client's keep-alive connection usable (Entra reuses it)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from gateway.settings import Settings
from tests.conftest import ADMIN_TOKEN, Tenant
from tests.support.live import free_port, live_server


@pytest.fixture
def connection(settings: Settings, tenant: Tenant) -> Iterator[http.client.HTTPConnection]:
    port = free_port()
    live = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    with live_server(live, port) as base:
        conn = http.client.HTTPConnection(urlsplit(base).netloc, timeout=10)
        yield conn
        conn.close()


def test_errors_keep_the_connection_open(
    connection: http.client.HTTPConnection, tenant: Tenant
) -> None:
    """400, 401, 404, 405 and 503-free answers all come back on one and the same socket."""
    scim = {"Authorization": f"Bearer {tenant.token}"}
    base = f"/scim/v2/{tenant.account_id}"
    requests = [
        ("GET", f"{base}/Users?filter=userName%20eq", scim, 400),
        ("GET", f"{base}/Users?startIndex=abc", scim, 400),
        ("POST", f"{base}/Users", {**scim, "Content-Type": "application/scim+json"}, 400),
        ("GET", f"{base}/Users", {"Authorization": "Bearer wrong"}, 401),
        ("GET", f"{base}/Nothing", scim, 404),
        ("DELETE", "/api/v1/accounts", {"Authorization": f"Bearer {ADMIN_TOKEN}"}, 405),
        ("GET", "/api/v1/accounts?limit=x", {}, 401),
        ("GET", "/livez", {}, 200),
    ]
    sockets = set()
    for method, path, headers, status in requests:
        body = "{" if method == "POST" else None
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == status, (method, path)
        assert response.getheader("connection") != "close"
        sockets.add(id(connection.sock))
    assert len(sockets) == 1
