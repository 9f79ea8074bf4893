"""Three replicas on one PostgreSQL, as the Helm chart runs them, one killed mid-load.

Messaging and SCIM in one test, Teams presence behind a balancer in another, and the
SCIM limit across replicas in a third.

Three `serve` processes, each on its own port and data directory, share one database
and one public URL (the balancer's). SCIM creates, signed Twilio webhooks and agent
replies go to all three in turn while a CloudLink consumer follows the feed; one replica
is SIGKILLed in the middle and started again. Then every acknowledged request is stored
once and in the feed once, no reply reached Twilio twice (a send the killed replica had
made without recording it is found in Twilio's list by the replica taking it over), no
event reached the CloudLink receiver under two ids, and the feed read during the load
skipped nothing.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from storage.engine import make_engine
from storage.tables import MESSAGES, SCIM_USERS
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, user_body
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.twilio import new_sid
from tests.gateway.messaging.conftest import Stack, fakes, set_up_account  # noqa: F401
from tests.gateway.messaging.test_processes import Fakes, _client, _sent_message_ids, messaging_env
from tests.gateway.presence.conftest import (  # noqa: F401
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    USERS,
    TeamsStack,
    microsoft,
    provision,
)
from tests.support import feed
from tests.support.balancer import balancing
from tests.support.server import ServerProcess, server_env, start_server, stop_server, wait_ready
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

PUBLIC_URL = "https://gateway.example.test"
MONITOR = "monitor1@contoso.example"
REPLICAS = 3


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """PostgreSQL only: replicas share a database server."""
    from tests.conftest import postgres_of
    from tests.support.databases import backend_database

    factory = postgres_of(request)()
    if factory is None:
        pytest.skip("PostgreSQL is not available")
    with backend_database("postgresql", tmp_path, postgres_of(request)) as url:
        yield url


def _envs(
    tmp_path: Path, database_url: str, urls: dict[str, str], **settings: str
) -> list[dict[str, str]]:
    return [
        messaging_env(
            tmp_path / f"data-{n}",
            database_url,
            urls,
            GATEWAY_PUBLIC_URL=PUBLIC_URL,
            GATEWAY_OUTBOX_POLL_SECONDS="0.1",
            **settings,
        )
        for n in range(REPLICAS)
    ]


class Load:
    """Requests spread over the replicas; what each acknowledged, kept for the checks."""

    def __init__(self, stack: Stack, replicas: list[ServerProcess], scim: dict[str, str]) -> None:
        self.stack = stack
        self.replicas = replicas
        self.scim = scim
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.users: list[str] = []
        self.messages: list[str] = []
        self.replies: list[str] = []
        self.refused: Counter[str] = Counter()

    def _stack_on(self, http: httpx2.Client) -> Stack:
        return Stack(
            url=str(http.base_url),
            http=http,
            twilio=self.stack.twilio,
            cm=self.stack.cm,
            cloudlink=self.stack.cloudlink,
            account_id=self.stack.account_id,
            twilio_channel=self.stack.twilio_channel,
        )

    def run(self, worker: int, conversation: str) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            replica = self.replicas[(worker + n) % REPLICAS]
            with _client(replica.url) as http:
                try:
                    self._one(self._stack_on(http), worker, n, conversation)
                except httpx2.TransportError:
                    # The replica was killed: the balancer routes the retry elsewhere.
                    with self.lock:
                        self.refused["transport"] += 1

    def _one(self, stack: Stack, worker: int, n: int, conversation: str) -> None:
        kind = n % 3
        if kind == 0:
            body = user_body(f"r{worker}-{n}")
            answer = stack.http.post(
                self.scim["path"],
                json=body,
                headers={
                    "Authorization": self.scim["auth"],
                    "Content-Type": "application/scim+json",
                },
            )
            if answer.status_code == 201:
                with self.lock:
                    self.users.append(body["userName"])
        elif kind == 1:
            sid = new_sid("SM")
            answer = stack.twilio_inbound(
                f"load {worker}-{n}", sid=sid, sender=f"+316200{worker:05d}"
            )
            if answer.status_code == 200:
                with self.lock:
                    self.messages.append(sid)
        else:
            answer = stack.api(
                "POST",
                f"/conversations/{conversation}/messages",
                json={"text": f"reply {worker}-{n}"},
            )
            if answer.status_code in (201, 202):
                with self.lock:
                    self.replies.append(answer.json()["id"])
        if answer.status_code >= 500 and answer.status_code != 503:
            raise AssertionError(f"{answer.status_code}: {answer.text}")


def test_three_replicas_one_killed_mid_load_lose_nothing_and_send_nothing_twice(
    tmp_path: Path,
    database_url: str,
    fakes: Fakes,  # noqa: F811
) -> None:
    twilio, _cm, cloudlink, urls = fakes
    envs = _envs(tmp_path, database_url, urls)
    logs = [(tmp_path / f"serve-{n}.log").open("w") for n in range(REPLICAS)]
    replicas = [start_server(env, 1, log) for env, log in zip(envs, logs, strict=True)]
    try:
        for replica in replicas:
            wait_ready(replica, 1)
        with _client(replicas[0].url) as http:
            stack = Stack(
                url=replicas[0].url,
                http=http,
                twilio=twilio,
                cm=_cm,
                cloudlink=cloudlink,
                cloudlink_url=urls["cloudlink"],
            )
            set_up_account(stack)
            assert stack.twilio_inbound("first").status_code == 200
            [conversation] = stack.conversations()
            stack.api("POST", "/integrations", json={"kind": "azure_ad_sync"})
            keys = stack.api("POST", "/integrations/azure_ad_sync/keys").json()
            scim = {
                "path": keys["tenant_url"].removeprefix(PUBLIC_URL) + "/Users",
                "auth": f"Bearer {keys['secret_token']}",
            }
            load = Load(stack, replicas, scim)
            page, committed = feed.of_account(stack.api)
            seen: list[dict[str, Any]] = []
            done = threading.Event()
            reader = threading.Thread(
                target=lambda: seen.extend(feed.follow(page, done, committed))
            )
            reader.start()
            workers = [
                threading.Thread(target=load.run, args=(n, conversation["id"])) for n in range(6)
            ]
            for thread in workers:
                thread.start()
            eventually(lambda: len(load.messages) >= 60, timeout=120, what="load before the kill")
            # Sends answered slowly from now on: the kill cuts some of them midway.
            twilio.answer_late(1_000_000, 1.0)
            time.sleep(1.0)
            replicas[1].process.kill()
            replicas[1].process.wait(timeout=10)
            eventually(lambda: len(load.messages) >= 120, timeout=120, what="load after the kill")
            replicas[1] = start_server(envs[1], 1, logs[1])
            wait_ready(replicas[1], 1)
            eventually(
                lambda: len(load.messages) >= 180, timeout=120, what="load after the restart"
            )
            load.stop.set()
            for thread in workers:
                thread.join(timeout=60)
            done.set()
            reader.join(timeout=120)

            # Stored once each.
            engine = make_engine(database_url)
            try:
                with engine.connect() as conn:
                    stored = Counter(
                        conn.execute(
                            select(MESSAGES.c.provider_message_id).where(
                                MESSAGES.c.direction == "inbound"
                            )
                        ).scalars()
                    )
                    users = Counter(conn.execute(select(SCIM_USERS.c.user_name)).scalars())
            finally:
                engine.dispose()
            assert [sid for sid in load.messages if stored[sid] != 1] == []
            assert [name for name in load.users if users[name] != 1] == []

            # In the feed once each, and the reader during the load skipped nothing.
            everything = feed.settled(page, committed)
            ids = [item["id"] for item in everything]
            assert len(ids) == len(set(ids))
            # (Events committed after the reader stopped, a late send's, come after it.)
            assert [item["id"] for item in seen] == ids[: len(seen)]
            received = [e for e in everything if e["type"] == "message.received"]
            assert len(received) == len(load.messages) + 1

            # Every reply sent once; every event delivered, each under its own id only.
            eventually(
                lambda: set(load.replies) <= set(_sent_message_ids(twilio)),
                timeout=120,
                what="replies",
            )
            twilio.recover()
            # A send the killed replica had made without recording it was looked for by the
            # replica taking it over (test_processes shows one such send step by step).
            assert [reply for reply, n in _sent_message_ids(twilio).items() if n > 1] == []
            start = next(i for i, e in enumerate(everything) if e["type"] == "endpoint.created")
            pushed = set(ids[start:])
            eventually(
                lambda: pushed <= {e["id"] for e in cloudlink.received},
                timeout=120,
                what="every event at the receiver",
            )
            # Every event received is one of the feed's: read again, as sends answered
            # late (after ``everything`` was read) have recorded events of their own since.
            final = {item["id"] for item in feed.settled(page, committed)}
            assert {e["id"] for e in cloudlink.received} <= final
            assert load.replies
            assert load.users
    finally:
        for replica in replicas:
            stop_server(replica)
        for log in logs:
            log.close()


RATE, BURST = 2, 4
SECONDS = 10.0


@pytest.mark.parametrize("spread", [True, False], ids=["spread", "one-replica"])
def test_an_accounts_scim_limit_is_the_configured_one_whatever_the_replicas(
    tmp_path: Path,
    database_url: str,
    fakes: Fakes,  # noqa: F811
    spread: bool,
) -> None:
    """2 requests a second and a burst of 4 for the account across three replicas,
    within 10%, whether the requests are spread over them or all reach one (a balancer
    that keeps Entra's connection on one pod)."""
    envs = _envs(
        tmp_path,
        database_url,
        fakes[3],
        GATEWAY_SCIM_RATE_LIMIT_PER_SECOND=str(RATE),
        GATEWAY_SCIM_RATE_LIMIT_BURST=str(BURST),
    )
    replicas = [start_server(env, 1, None) for env in envs]
    try:
        for replica in replicas:
            wait_ready(replica, 1)
        with _client(replicas[0].url) as http:
            account = http.post("/api/v1/accounts", json={"name": "Limited"}).json()["id"]
            http.post(f"/api/v1/accounts/{account}/integrations", json={"kind": "azure_ad_sync"})
            keys = http.post(f"/api/v1/accounts/{account}/integrations/azure_ad_sync/keys").json()
        path = keys["tenant_url"].removeprefix(PUBLIC_URL) + "/Users?count=1"
        auth = {"Authorization": f"Bearer {keys['secret_token']}"}
        statuses: list[int] = []
        lock = threading.Lock()
        started = time.monotonic()
        deadline = started + SECONDS

        def hammer(worker: int) -> None:
            targets = replicas if spread else replicas[:1]
            clients = [httpx2.Client(base_url=r.url, headers=auth, timeout=30) for r in targets]
            try:
                for n in itertools.count():
                    if time.monotonic() >= deadline:
                        return
                    status = clients[(worker + n) % len(clients)].get(path).status_code
                    with lock:
                        statuses.append(status)
            finally:
                for client in clients:
                    client.close()

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        # Requests are sent from the start until the deadline.
        elapsed = deadline - started
    finally:
        for replica in replicas:
            stop_server(replica)
    assert set(statuses) <= {200, 429}
    allowed, configured = statuses.count(200), BURST + RATE * elapsed
    assert statuses.count(429) > configured, "the load went well past the limit"
    assert 0.9 * configured <= allowed <= 1.1 * configured, (allowed, configured)


def test_three_replicas_behind_a_balancer_keep_teams_presence_when_one_is_killed(
    tmp_path: Path,
    database_url: str,
    microsoft: tuple[FakeMicrosoft, str],  # noqa: F811
) -> None:
    """Graph's notifications and a monitor's sign-in reach the replicas through one public
    URL. One replica is SIGKILLed: the subscription is still renewed (by whichever replica
    claims the upkeep), there is never a second one, and a Teams change still reaches the
    feed."""
    fake, fake_url = microsoft
    fake.add_app(TENANT, CLIENT_ID, CLIENT_SECRET)
    backends: list[str] = []
    with balancing(backends) as balancer:
        envs = [
            server_env(
                tmp_path / f"data-{n}",
                database_url,
                admin_token=ADMIN_TOKEN,
                secret_key=SECRET_KEY,
                GATEWAY_PUBLIC_URL=balancer.url,
                GATEWAY_GRAPH_API_URL=fake_url,
                GATEWAY_LOGIN_URL=fake_url,
                GATEWAY_OUTBOX_POLL_SECONDS="0.05",
                GATEWAY_OUTBOX_RETRY_SCALE="0.01",
                GATEWAY_OUTBOX_LEASE_SECONDS="5",
                GATEWAY_PRESENCE_UPKEEP_SECONDS="1",
            )
            for n in range(REPLICAS)
        ]
        logs = [(tmp_path / f"serve-{n}.log").open("w") for n in range(REPLICAS)]
        replicas = [start_server(env, 1, log) for env, log in zip(envs, logs, strict=True)]
        try:
            for replica in replicas:
                wait_ready(replica, 1)
            backends[:] = [replica.url.removeprefix("http://") for replica in replicas]
            with _client(balancer.url) as http:
                stack = TeamsStack(
                    url=balancer.url,
                    http=http,
                    microsoft=fake,
                    microsoft_url=fake_url,
                    database_url=database_url,
                )
                provision(stack)
                assert stack.set_teams().status_code == 200
                fake.add_user(TENANT, MONITOR)
                added = stack.api("POST", "/presence/monitors", json={"upn": MONITOR})
                assert stack.sign_in(added.json()["authorize_url"]).status_code == 200
                eventually(
                    lambda: [m["status"] for m in stack.monitors()["items"]] == ["subscribed"],
                    timeout=60,
                    what="the monitor subscribed",
                )
                [before] = fake.subscriptions()
                replicas[1].process.kill()
                replicas[1].process.wait(timeout=10)
                eventually(
                    lambda: (
                        [s["expirationDateTime"] for s in fake.subscriptions()]
                        > [before["expirationDateTime"]]
                    ),
                    # The killed replica's lease (5 s) runs out first; on a loaded machine
                    # the survivors' upkeep may take a while more.
                    timeout=120,
                    what="the subscription renewed after the kill",
                )
                user_id = fake.user(USERS[0])["id"]
                fake.set_teams_presence(user_id, "Busy", "InAConferenceCall")
                eventually(
                    lambda: (
                        (
                            stack.api("GET", f"/presence/{USERS[0]}").json()["sources"].get("teams")
                            or {}
                        ).get("activity")
                        == "InAConferenceCall"
                    ),
                    timeout=60,
                    what="the Teams change after the kill",
                )
                replicas[1] = start_server(envs[1], 1, logs[1])
                wait_ready(replicas[1], 1)
                backends[1] = replicas[1].url.removeprefix("http://")
                time.sleep(3)
                [after] = fake.subscriptions()
                assert after["id"] == before["id"]
                assert stack.monitors()["items"][0]["last_error"] is None
        finally:
            for replica in replicas:
                stop_server(replica)
            for log in logs:
                log.close()
