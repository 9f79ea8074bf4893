"""Each provider client reads an answer up to a ceiling sized to what its API can answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from gateway.clients.cmcom import CmApi
from gateway.clients.graph import BatchRequest, GraphApi
from gateway.clients.http import HttpClient, Unanswered, new_http_client
from gateway.clients.identity import AppCredentials, IdentityPlatform
from gateway.clients.twilio import TwilioApi, TwilioCredentials
from tests.gateway.clients.answers import MIB, Answer, AnswerServer, peak_memory
from tests.support.sync import run

TWILIO = TwilioCredentials("AC" + "1f" * 16, "fake-twilio-auth-token-0123456789")
APP = AppCredentials("contoso.onmicrosoft.com", "client-id", "client-secret")

Call = Callable[[HttpClient, str], Awaitable[Any]]


def _twilio_send(http: HttpClient, url: str) -> Awaitable[Any]:
    return TwilioApi(http, url).send_message(
        TWILIO,
        to="whatsapp:+31612345678",
        from_="whatsapp:+14155550100",
        body="On its way!",
        media_urls=[],
        status_callback="https://gateway.example/webhooks/twilio/x",
    )


def _cm_send(http: HttpClient, url: str) -> Awaitable[Any]:
    return CmApi(http, url).send_message(
        "product-token",
        from_="14155550100",
        to="31612345678",
        text="On its way!",
        channel="whatsapp",
        reference="message-1",
    )


def _subscribe(http: HttpClient, url: str) -> Awaitable[Any]:
    return GraphApi(http, url).create_subscription(
        "token",
        user_ids=["user-1"],
        notification_url="https://gateway.example/webhooks/graph/notifications",
        lifecycle_url="https://gateway.example/webhooks/graph/lifecycle",
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
        client_state="state",
    )


CALLS: dict[str, tuple[Call, str, int]] = {
    "twilio message": (_twilio_send, "64 KiB", 64 * 1024),
    "twilio numbers": (
        lambda http, url: TwilioApi(http, url).list_numbers(TWILIO),
        "8 MiB",
        8 * MIB,
    ),
    "cm message": (_cm_send, "64 KiB", 64 * 1024),
    "app token": (
        lambda http, url: IdentityPlatform(http, url).app_token(APP),
        "256 KiB",
        MIB // 4,
    ),
    "signing keys": (
        lambda http, url: IdentityPlatform(http, url).signing_keys("common"),
        "256 KiB",
        MIB // 4,
    ),
    "graph user": (
        lambda http, url: GraphApi(http, url).user("token", "ada@contoso.com"),
        "1 MiB",
        MIB,
    ),
    "graph batch": (
        lambda http, url: GraphApi(http, url).batch("token", [BatchRequest("1", "GET", "/me")]),
        "8 MiB",
        8 * MIB,
    ),
    "graph subscription": (_subscribe, "1 MiB", MIB),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_an_answer_over_the_clients_ceiling_ends_the_call_at_once(name: str) -> None:
    """A 200 streaming 300 MiB is an ``Unanswered`` naming the call's ceiling, after one
    request (a send or a create that may have been done is not repeated), holding no more
    than the ceiling."""
    call, shown, ceiling = CALLS[name]

    async def scenario() -> None:
        async with AnswerServer(Answer(framing="chunked")) as server:
            http = new_http_client(10.0)
            try:
                with peak_memory() as peak, pytest.raises(Unanswered) as caught:
                    await call(http, server.url)
            finally:
                await http.close()
        assert f"HTTP 200 with an answer over {shown}" in str(caught.value)
        assert not caught.value.retryable
        assert server.requests == 1
        assert peak.bytes < ceiling + 2 * MIB

    run(scenario())


def test_graph_reads_650_presences_whole_and_refuses_more_than_its_ceiling() -> None:
    """A getPresencesByUserId page of 650 users with long status messages (some 2 MiB, more
    than a send's ceiling) is read whole; a 300 MiB one is refused at 8 MiB."""
    presences = [
        {
            "id": f"user-{number}",
            "availability": "Away",
            "activity": "OutOfOffice",
            "statusMessage": {"message": {"content": "Back on Monday. " * 100}},
        }
        for number in range(650)
    ]
    page = orjson.dumps({"value": presences})
    assert len(page) > 1 * MIB

    async def scenario() -> None:
        async with AnswerServer(Answer(body=page)) as server:
            http = new_http_client(10.0)
            graph = GraphApi(http, server.url)
            ids = [f"user-{number}" for number in range(650)]
            try:
                found = await graph.presences("token", ids)
                server.answer = Answer(framing="chunked")
                with peak_memory() as peak, pytest.raises(Unanswered, match="over 8 MiB"):
                    await graph.presences("token", ids)
            finally:
                await http.close()
        assert found == presences
        assert peak.bytes < 10 * MIB

    run(scenario())
