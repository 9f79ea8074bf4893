"""Event delivery to a CloudLink endpoint: the status decides, the answer's body is barely read."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.clients.cloudlink import EndpointGone, deliver_event
from gateway.clients.http import ProviderError, new_http_client
from gateway.settings import Settings
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL
from tests.fakes.cloudlink import FakeCloudLink
from tests.fakes.loopback import serve_app
from tests.gateway.clients.answers import MIB, Answer, AnswerServer, peak_memory
from tests.support.sync import run
from tests.support.waiting import eventually

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode("ascii")


async def _deliver(url: str, timeout: float = 10.0) -> int:
    http = new_http_client(timeout)
    try:
        return await deliver_event(
            http,
            url=url,
            secret=SECRET,
            message_id="evt_1",
            body='{"type": "message.received"}',
            allow_private=True,
        )
    finally:
        await http.close()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_200_streaming_hundreds_of_mib_is_delivered_reading_little(framing: str) -> None:
    """An endpoint answering 200 with a 300 MiB body has accepted the event: the delivery
    succeeds, holding no more than a few KB of the answer, and stops reading it."""

    async def scenario() -> None:
        async with AnswerServer(Answer(framing=framing)) as server:
            with peak_memory() as peak:
                status = await _deliver(server.url + "/events")
            await server.client_closed()
        assert status == 200
        assert peak.bytes < 2 * MIB
        assert server.sent < 100 * MIB

    run(scenario())


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [(400, ProviderError, True), (410, EndpointGone, False), (503, ProviderError, True)],
)
def test_a_refusal_streaming_hundreds_of_mib_is_decided_by_its_status(
    status: int, error: type[ProviderError], retryable: bool
) -> None:
    """A 4xx or 5xx with a 300 MiB body is the failure its status says, read no further
    than a few KB."""

    async def scenario() -> None:
        async with AnswerServer(Answer(status=status, framing="chunked")) as server:
            with peak_memory() as peak, pytest.raises(error) as caught:
                await _deliver(server.url + "/events")
        assert (type(caught.value), caught.value.status) == (error, status)
        assert caught.value.retryable is retryable
        assert peak.bytes < 2 * MIB

    run(scenario())


def test_an_endpoint_trickling_after_its_200_is_delivered_at_the_deadline() -> None:
    """A 200 whose body comes a byte every 50 ms is delivered once the call's deadline cuts
    the body, rather than failed for the time the body takes."""

    async def scenario() -> None:
        answer = Answer(body=b"accepted, " * 100, drip=0.05, content_type="text/plain")
        async with AnswerServer(answer) as server:
            status = await _deliver(server.url + "/events", timeout=0.5)
            await server.client_closed()
        assert status == 200
        assert 0 < server.sent < answer.length

    run(scenario())


def test_an_event_reaches_an_endpoint_answering_hundreds_of_mib(
    make_settings: Callable[..., Settings],
) -> None:
    """Through the outbox, an event to an endpoint that answers 200 and 300 MiB is delivered
    once, not retried nor dead-lettered, and the endpoint's answer is not read to its end."""
    cloudlink = FakeCloudLink()
    cloudlink.answer_at_length(300 * MIB)
    settings = make_settings(
        allow_private_endpoints=True,
        outbox_poll_seconds=0.05,
        outbox_retry_scale=0.01,
        event_max_attempts=3,
    )
    with (
        serve_app(cloudlink.app) as cloudlink_url,
        TestClient(
            create_app(settings),
            base_url=PUBLIC_URL,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client,
    ):
        account = client.post("/api/v1/accounts", json={"name": "Contoso"}).json()["id"]
        created = client.post(
            f"/api/v1/accounts/{account}/endpoints", json={"url": cloudlink_url + "/events"}
        )
        assert created.status_code == 201, created.text
        cloudlink.set_secret("/events", created.json()["secret"])
        eventually(lambda: _delivered(client) >= 1, what="the event delivered")
        dead = client.get(f"/api/v1/accounts/{account}/dead-letters").json()["items"]
    [event] = cloudlink.events("endpoint.created")
    assert event["data"]["id"] == created.json()["id"]
    assert (cloudlink.duplicates, dead) == ([], [])
    assert cloudlink.streamed < 100 * MIB


def _delivered(client: TestClient) -> float:
    series = 'cloudlink_gateway_outbox_deliveries_total{kind="event",outcome="delivered"}'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series):
            return float(line.rpartition(" ")[2])
    return 0.0
