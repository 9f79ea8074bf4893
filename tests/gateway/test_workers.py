"""`serve --workers 2`, on each backend: two processes accept on one port and behave as one
server: uniqueness holds, the feed never skips or reorders, a killed worker loses no
acknowledged write, metrics are the sum over workers, and the rate limit is the account's."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import SECRET_KEY, user_body
from tests.support import feed
from tests.support.databases import sqlite_url
from tests.support.server import (
    ESTABLISHED,
    LISTENING,
    ServerProcess,
    held_by,
    server_env,
    serving,
)

# Servers of two worker processes.
pytestmark = pytest.mark.slow

ADMIN = "workers-test-token-0123456789abcdef"
CONCURRENCY = 8


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return server_env(tmp_path / "data", database_url, admin_token=ADMIN, secret_key=SECRET_KEY)


class Gateway:
    """A 2-worker server and one account with SCIM keys."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        admin = {"Authorization": f"Bearer {ADMIN}"}
        account = httpx2.post(f"{server.url}/api/v1/accounts", json={"name": "W"}, headers=admin)
        self.account_id = account.json()["id"]
        keys = httpx2.post(
            f"{server.url}/api/v1/accounts/{self.account_id}/integrations/azure_ad_sync/keys",
            headers=admin,
        ).json()
        self.users_url = keys["tenant_url"] + "/Users"
        self.scim = {"Authorization": f"Bearer {keys['secret_token']}"}
        self.admin = admin

    def create(self, body: dict[str, Any]) -> httpx2.Response:
        """POST /Users on a new connection, so requests spread over both workers."""
        return httpx2.post(self.users_url, json=body, headers=self.scim, timeout=30)

    def api(self, method: str, path: str) -> httpx2.Response:
        """The admin API of the account (``path`` after the account's)."""
        url = f"{self.server.url}/api/v1/accounts/{self.account_id}{path}"
        return httpx2.request(method, url, headers=self.admin, timeout=30)


@pytest.fixture
def gateway(env: dict[str, str]) -> Iterator[Gateway]:
    with serving(env, workers=2) as server:
        yield Gateway(server)


def test_two_workers_let_exactly_one_of_twenty_racing_creates_win(gateway: Gateway) -> None:
    """Twenty concurrent creates of one userName across two processes: one 201, the rest 409."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        statuses = list(pool.map(lambda _: gateway.create(user_body(7)).status_code, range(20)))
    assert sorted(statuses) == [201] + [409] * 19


def test_a_feed_reader_sees_every_event_once_in_order_during_concurrent_writes(
    gateway: Gateway,
) -> None:
    """A reader following the feed during 80 concurrent creates misses and reorders none."""
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    page, committed = feed.of_account(gateway.api)

    def follow() -> None:
        seen.extend(feed.follow(page, done, committed))

    reader = threading.Thread(target=follow)
    reader.start()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        statuses = list(pool.map(lambda n: gateway.create(user_body(n)).status_code, range(80)))
    done.set()
    reader.join(timeout=60)
    assert statuses == [201] * 80
    everything = feed.settled(page, committed)
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    cursors = feed.positions(seen)
    assert cursors == sorted(set(cursors))


def test_killing_a_worker_loses_no_acknowledged_write_and_no_counted_request(
    gateway: Gateway,
) -> None:
    """SIGKILL of one worker mid-load: every 201 is stored, counters keep the dead one's counts."""
    acknowledged: list[str] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        try:
            response = gateway.create(user_body(n))
        except httpx2.TransportError:  # in flight on the killed worker: not acknowledged
            return
        assert response.status_code in {201, 409}, response.text
        if response.status_code == 201:
            with lock:
                acknowledged.append(response.json()["id"])

    victim = gateway.server.worker_pids()[0]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        first = [pool.submit(create, n) for n in range(40)]
        while len(acknowledged) < 10:
            time.sleep(0.01)
        gateway.server.kill_worker(victim)
        rest = [pool.submit(create, n) for n in range(40, 80)]
        for future in first + rest:
            future.result()
    assert victim not in gateway.server.worker_pids()
    for user_id in acknowledged:
        stored = httpx2.get(f"{gateway.users_url}/{user_id}", headers=gateway.scim, timeout=30)
        assert stored.status_code == 200
    counted = _counter(gateway.server, "/scim/v2/{account_id}/Users", "POST", "2xx")
    # A killed worker may die between sending a 201 and counting it: at most one lost.
    assert counted >= len(acknowledged) - 1


def _counter(server: ServerProcess, route: str, method: str, status_class: str) -> float:
    text = httpx2.get(server.url + "/metrics", timeout=30).text
    pattern = re.compile(
        r"^cloudlink_gateway_http_requests_total\{(?P<labels>.*)\} (?P<value>\S+)$", re.M
    )
    wanted = {"route": route, "method": method, "status_class": status_class}
    total = 0.0
    for match in pattern.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels == wanted:
            total += float(match["value"])
    return total


def test_each_worker_listens_on_its_own_socket_and_keep_alive_connections_spread(
    gateway: Gateway,
) -> None:
    """Sixteen keep-alive connections opened at once: each worker holds some (with one
    shared socket, the worker that wakes first often took them all)."""
    server = gateway.server
    workers = server.worker_pids()
    listening = server.sockets(LISTENING)
    assert len(listening) == 2
    assert all(len(held_by(pid, listening)) == 1 for pid in workers)
    clients = [httpx2.Client(base_url=gateway.server.url, timeout=30) for _ in range(16)]
    start = threading.Barrier(len(clients))

    def first_request(client: httpx2.Client) -> int:
        start.wait()
        return client.get("/livez").status_code

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            assert set(pool.map(first_request, clients)) == {200}
        established = server.sockets(ESTABLISHED)
        held = [len(held_by(pid, established)) for pid in workers]
        assert sum(held) == 16
        # Two workers chosen by a hash of each connection: all 16 on one is 1 in 32,768.
        assert min(held) >= 1, held
    finally:
        for client in clients:
            client.close()


def test_metrics_are_the_sum_over_workers_whichever_answers(gateway: Gateway) -> None:
    """Forty /livez calls spread over both workers; every scrape reports all forty."""
    for _ in range(40):
        assert httpx2.get(gateway.server.url + "/livez").status_code == 200
    scrapes = {_counter(gateway.server, "/livez", "GET", "2xx") for _ in range(6)}
    assert scrapes == {40.0}


def test_the_rate_limit_is_the_accounts_not_each_workers(env: dict[str, str]) -> None:
    """With two workers, an account gets at most its configured burst and rate, not twice."""
    limited = {
        **env,
        "GATEWAY_SCIM_RATE_LIMIT_PER_SECOND": "2",
        "GATEWAY_SCIM_RATE_LIMIT_BURST": "10",
    }
    with serving(limited, workers=2) as server:
        gateway = Gateway(server)
        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            statuses = list(
                pool.map(
                    lambda _: httpx2.get(gateway.users_url, headers=gateway.scim).status_code,
                    range(40),
                )
            )
        elapsed = time.monotonic() - started
    allowed = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert allowed <= 10 + 2 * elapsed + 1


def test_a_killed_servers_metrics_directory_is_gone_after_the_next_start(
    tmp_path: Path,
) -> None:
    """SIGKILL of the whole server leaves its metric files behind; the next start removes
    them and keeps only its own."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {
        **server_env(
            tmp_path / "data", sqlite_url(tmp_path), admin_token=ADMIN, secret_key=SECRET_KEY
        ),
        "TMPDIR": str(temporary),
    }
    with serving(env, workers=2) as server:
        [first] = list(temporary.glob("cloudlink-gateway-metrics-*"))
        for pid in [*server.worker_pids(), server.process.pid]:
            os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=30)
    assert first.exists()
    with serving(env, workers=2):
        left = list(temporary.glob("cloudlink-gateway-metrics-*"))
    assert first not in left
    assert len(left) == 1
