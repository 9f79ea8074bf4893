"""Gateway processes as operators run them: several on one database, and one killed.

Two workers share the outbox without sending a row twice. A server killed with SIGKILL
in the middle of a webhook load loses nothing it acknowledged and, once restarted,
delivers every reply and event that was queued.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from storage.engine import make_engine
from storage.tables import MESSAGES
from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.fakes.cloudlink import FakeCloudLink
from tests.fakes.cmcom import FakeCM
from tests.fakes.twilio import FakeTwilio, new_sid
from tests.gateway.messaging.conftest import Stack, set_up_account
from tests.support.server import ServerProcess, server_env, serving
from tests.support.waiting import eventually

# Gateway processes started, killed and started again.
pytestmark = pytest.mark.slow

Fakes = tuple[FakeTwilio, FakeCM, FakeCloudLink, dict[str, str]]


def messaging_env(
    data_dir: Path, database_url: str, urls: dict[str, str], **settings: str
) -> dict[str, str]:
    """A `serve` process wired to the fakes, with quick retries and short leases."""
    quick = {
        "GATEWAY_TWILIO_API_URL": urls["twilio"],
        "GATEWAY_CM_API_URL": urls["cm"],
        "GATEWAY_ALLOW_PRIVATE_ENDPOINTS": "true",
        "GATEWAY_OUTBOX_POLL_SECONDS": "0.05",
        "GATEWAY_OUTBOX_RETRY_SCALE": "0.01",
        "GATEWAY_OUTBOX_LEASE_SECONDS": "5",
        "GATEWAY_SEND_MAX_ATTEMPTS": "20",
        "GATEWAY_EVENT_MAX_ATTEMPTS": "20",
    }
    return server_env(
        data_dir,
        database_url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        **{**quick, **settings},
    )


@pytest.fixture
def env(tmp_path: Path, database_url: str, fakes: Fakes) -> dict[str, str]:
    return messaging_env(tmp_path / "data", database_url, fakes[3])


def _stack(server: ServerProcess, http: httpx2.Client, fakes: Fakes) -> Stack:
    twilio, cm, cloudlink, urls = fakes
    return Stack(
        url=server.url,
        http=http,
        twilio=twilio,
        cm=cm,
        cloudlink=cloudlink,
        cloudlink_url=urls["cloudlink"],
    )


def _client(url: str) -> httpx2.Client:
    return httpx2.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )


def _conversation(stack: Stack) -> str:
    assert stack.twilio_inbound("first").status_code == 200
    [conversation] = stack.conversations()
    return str(conversation["id"])


def _sent_message_ids(twilio: FakeTwilio) -> Counter[str]:
    return Counter(sent["status_callback"].rsplit("message=", 1)[1] for sent in twilio.sent)


def test_two_processes_never_send_a_reply_twice(env: dict[str, str], fakes: Fakes) -> None:
    """100 replies queued on a 2-worker server: each is sent exactly once."""
    with serving(env, workers=2) as server, _client(server.url) as http:
        stack = _stack(server, http, fakes)
        set_up_account(stack)
        conversation = _conversation(stack)
        ids = [
            stack.api(
                "POST", f"/conversations/{conversation}/messages", json={"text": f"r{i}"}
            ).json()["id"]
            for i in range(100)
        ]
        eventually(lambda: len(stack.twilio.sent) >= 100, timeout=60, what="100 sends")
        time.sleep(0.5)
        sent = _sent_message_ids(stack.twilio)
        assert set(sent) == set(ids)
        assert max(sent.values()) == 1


def _kill(server: ServerProcess) -> None:
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)


def test_a_reply_sent_by_a_killed_server_is_found_not_sent_again(
    env: dict[str, str], fakes: Fakes
) -> None:
    """The server is killed while Twilio holds its send unanswered: once the lease runs
    out, the restarted server finds the message in Twilio's list and keeps its id, and
    the customer gets the reply once."""
    twilio = fakes[0]
    with serving(env, workers=1) as server, _client(server.url) as http:
        stack = _stack(server, http, fakes)
        set_up_account(stack)
        conversation = _conversation(stack)
        twilio.answer_late(1, 15.0)
        reply = stack.api(
            "POST", f"/conversations/{conversation}/messages", json={"text": "Coming"}
        ).json()["id"]
        eventually(lambda: bool(twilio.sent), what="the send at Twilio")
        _kill(server)
    with serving(env, workers=1) as server, _client(server.url) as http:

        def recorded() -> str | None:
            message: dict[str, Any] = http.get(
                f"/api/v1/accounts/{_account_of(http)}/messages/{reply}"
            ).json()
            return (
                None
                if message["provider_message_id"] is None
                else str(message["provider_message_id"])
            )

        eventually(lambda: recorded() is not None, timeout=30, what="the send recorded")
        [sent] = twilio.sent
        assert recorded() == sent["sid"]
        assert twilio.requests["messages"] == 1
        assert twilio.requests["list_messages"] == 1
        twilio.recover()


def test_a_killed_server_loses_nothing_it_acknowledged(
    env: dict[str, str], fakes: Fakes, database_url: str
) -> None:
    """Signed webhooks race a SIGKILL: every acknowledged one is stored exactly once, and
    the replies and events queued before the kill are delivered after the restart."""
    twilio, _cm, cloudlink, _urls = fakes
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with serving(env, workers=2) as server, _client(server.url) as http:
        stack = _stack(server, http, fakes)
        set_up_account(stack)
        conversation = _conversation(stack)
        twilio.fail_always(503)
        replies = [
            stack.api(
                "POST", f"/conversations/{conversation}/messages", json={"text": f"q{i}"}
            ).json()["id"]
            for i in range(20)
        ]
        channel_url = stack.twilio_channel["webhook_url"]

        def sender(index: int) -> None:
            with _client(server.url) as own:
                shooter = _stack(server, own, fakes)
                shooter.twilio_channel = {"webhook_url": channel_url}
                count = 0
                while not stop.is_set():
                    sid = new_sid("SM")
                    try:
                        answer = shooter.twilio_inbound(
                            f"load {index}-{count}", sid=sid, sender=f"+3161000{index:04d}"
                        )
                    except httpx2.TransportError:
                        return
                    if answer.status_code == 200:
                        with lock:
                            acknowledged.append(sid)
                    count += 1

        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(sender, index) for index in range(6)]
            eventually(lambda: len(acknowledged) >= 150, timeout=60, what="load")
            _kill(server)
            stop.set()
            for future in futures:
                future.result()
    assert len(acknowledged) >= 150
    twilio.recover()
    with serving(env, workers=1) as server, _client(server.url) as http:
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
        finally:
            engine.dispose()
        missing = [sid for sid in acknowledged if stored[sid] != 1]
        assert missing == []
        eventually(
            lambda: set(replies) <= set(_sent_message_ids(twilio)), timeout=60, what="replies"
        )
        assert max(_sent_message_ids(twilio).values()) == 1
        stack = _stack(server, http, fakes)
        stack.account_id = _account_of(http)
        feed_ids = {item["id"] for item in stack.feed()}

        def delivered() -> set[str]:
            return {event["id"] for event in cloudlink.received}

        eventually(lambda: _pushed_since_endpoint(stack) <= delivered(), timeout=60)
        assert len(feed_ids) > len(acknowledged)


def _account_of(http: httpx2.Client) -> str:
    [account] = http.get("/api/v1/accounts").json()["items"]
    return str(account["id"])


def _pushed_since_endpoint(stack: Stack) -> set[str]:
    """Ids of the feed's events from the endpoint's creation on (those it must receive)."""
    feed: list[dict[str, Any]] = stack.feed()
    start = next(i for i, item in enumerate(feed) if item["type"] == "endpoint.created")
    return {item["id"] for item in feed[start:]}
