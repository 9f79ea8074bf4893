"""SIGTERM under load: the server drains, then stops, and no request is lost on the way.

A load balancer is played by the test: it routes requests to the server until /readyz
has said 503 for a while (Kubernetes takes a few seconds to take a terminating pod out of
its Service), then stops routing. Every request sent must get its answer.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx2
import pytest

from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.support.databases import sqlite_url
from tests.support.server import server_env, serving

pytestmark = pytest.mark.slow

DRAIN = 3.0
SHUTDOWN = 5
# The balancer's delay between the pod's 503 and the last request it routes to it.
ROUTING_LAG = 1.5


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_drains_and_no_request_gets_a_connection_error(
    tmp_path: Path, workers: int
) -> None:
    env = server_env(
        tmp_path / "data",
        sqlite_url(tmp_path),
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        GATEWAY_DRAIN_SECONDS=str(DRAIN),
        GATEWAY_SHUTDOWN_SECONDS=str(SHUTDOWN),
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answered: list[int] = []
    errors: list[str] = []
    routing = threading.Event()
    routing.set()

    def client(n: int) -> None:
        with httpx2.Client(timeout=30, headers=headers) as http:
            i = 0
            while routing.is_set():
                i += 1
                try:
                    if i % 2:
                        reply = http.post(
                            server.url + "/api/v1/accounts", json={"name": f"Load {n}-{i}"}
                        )
                    else:
                        reply = http.get(server.url + "/api/v1/accounts?limit=5")
                    answered.append(reply.status_code)
                except httpx2.TransportError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

    with serving(env, workers=workers, output=tmp_path / "serve.log") as server:
        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        before = len(answered)
        signalled = time.monotonic()
        server.process.terminate()
        with httpx2.Client(timeout=5) as probe:
            ready = probe.get(server.url + "/readyz")
            while ready.status_code == 200:
                time.sleep(0.05)
                ready = probe.get(server.url + "/readyz")
            assert ready.json()["status"] == "draining"
            assert probe.get(server.url + "/livez").status_code == 200
        time.sleep(ROUTING_LAG)
        routing.clear()
        for thread in clients:
            thread.join(timeout=30)
        exit_code = server.process.wait(timeout=DRAIN + SHUTDOWN + 10)
        stopped_after = time.monotonic() - signalled

    assert errors == [], errors[:5]
    assert len(answered) > before, "requests were served during the drain"
    assert set(answered) <= {200, 201}, sorted(set(answered))
    # The server re-raises the SIGTERM it handled once done, as a process killed by it.
    assert exit_code in (0, -signal.SIGTERM)
    assert DRAIN <= stopped_after < DRAIN + SHUTDOWN + 5
