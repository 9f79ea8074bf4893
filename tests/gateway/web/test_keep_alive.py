"""Keep-alive connections: a refused request leaves them usable (Entra reuses them), and
the server keeps an idle one longer than the clients and balancers in front of it."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.settings import Settings
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, Tenant
from tests.support.databases import sqlite_url
from tests.support.live import free_port, live_server
from tests.support.server import server_env, serving


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


@pytest.mark.slow
def test_an_idle_connection_outlives_clients_and_balancers_idle_timeouts(tmp_path: Path) -> None:
    """`serve` keeps an idle connection open longer than the clients in front keep theirs
    (httpx 5 s, load balancers 60 s): the client always closes first. At equal timeouts
    (uvicorn's 5 s default was httpx's 5 s) a client could send on a connection the server
    was closing at that moment, and got no answer. GATEWAY_KEEPALIVE_SECONDS sets it."""
    env = server_env(
        tmp_path / "data", sqlite_url(tmp_path), admin_token=ADMIN_TOKEN, secret_key=SECRET_KEY
    )
    with serving(env) as server:
        conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
        conn.request("GET", "/livez")
        conn.getresponse().read()
        socket_before = conn.sock
        time.sleep(6.5)
        conn.request("GET", "/livez")
        assert conn.getresponse().status == 200
        assert conn.sock is socket_before
        conn.close()
    with serving({**env, "GATEWAY_KEEPALIVE_SECONDS": "1"}) as server:
        conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
        conn.request("GET", "/livez")
        conn.getresponse().read()
        time.sleep(2)
        conn.request("GET", "/livez")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            conn.getresponse()
        conn.close()
