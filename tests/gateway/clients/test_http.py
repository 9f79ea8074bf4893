"""Every outbound call: an answer is read up to a ceiling and within the call's deadline."""

from __future__ import annotations

import pytest

from gateway.clients.http import ProviderError, Unanswered, new_http_client, request
from tests.gateway.clients.answers import MIB, Answer, AnswerServer, peak_memory
from tests.support.sync import run


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
def test_an_answer_over_the_ceiling_is_refused_holding_no_more_than_it(framing: str) -> None:
    """A 200 streaming 300 MiB (declared, chunked or compressed) is an ``Unanswered`` naming
    the 64 KiB ceiling, not repeated, with little memory used and the connection closed."""

    async def scenario() -> None:
        async with AnswerServer(Answer(framing=framing)) as server:
            http = new_http_client(10.0)
            try:
                with peak_memory() as peak, pytest.raises(Unanswered) as caught:
                    await request(http, "GET", server.url + "/resource", what="reading")
                await server.client_closed()
            finally:
                await http.close()
        assert "over 64 KiB" in str(caught.value)
        assert (caught.value.retryable, caught.value.status) == (False, 200)
        assert peak.bytes < 2 * MIB
        assert server.sent < 100 * MIB

    run(scenario())


def test_a_refusal_over_the_ceiling_is_a_refusal() -> None:
    """A 400 streaming 300 MiB is a ``ProviderError`` that is not ``Unanswered``: the call
    was refused, only its reasons were too long to read."""

    async def scenario() -> None:
        async with AnswerServer(Answer(status=400, framing="chunked")) as server:
            http = new_http_client(10.0)
            try:
                with peak_memory() as peak, pytest.raises(ProviderError) as caught:
                    await request(http, "POST", server.url + "/resource", what="creating")
            finally:
                await http.close()
        assert not isinstance(caught.value, Unanswered)
        assert (caught.value.retryable, caught.value.status) == (False, 400)
        assert "creating: HTTP 400 with an answer over 64 KiB" in str(caught.value)
        assert peak.bytes < 2 * MIB

    run(scenario())


def test_a_short_answer_keeps_its_connection_and_a_long_one_closes_it() -> None:
    """Answers read to their end leave the connection for the next call; one cut at its
    ceiling closes it, so no unread rest is ever taken for the next answer."""

    async def scenario() -> None:
        short = Answer(body=b'{"ok": true}')
        async with AnswerServer(short) as server:
            http = new_http_client(10.0)
            try:
                for _ in range(2):
                    await request(http, "GET", server.url + "/resource", what="reading")
                assert (server.connections, server.closed_by_client) == (1, 0)
                server.answer = Answer(framing="chunked")
                with pytest.raises(Unanswered):
                    await request(http, "GET", server.url + "/resource", what="reading")
                await server.client_closed()
                server.answer = short
                reply = await request(http, "GET", server.url + "/resource", what="reading")
            finally:
                await http.close()
        assert reply.json() == {"ok": True}
        assert (server.connections, server.requests) == (2, 4)

    run(scenario())


def test_a_trickling_answer_is_cut_by_the_total_deadline() -> None:
    """Headers at once and then a byte every 50 ms: the client's total timeout covers the
    body too, so the call ends ``Unanswered`` at its deadline, long before the body does."""

    async def scenario() -> None:
        answer = Answer(body=b'{"value": "' + b"x" * 200 + b'"}', drip=0.05)
        async with AnswerServer(answer) as server:
            http = new_http_client(0.5)
            try:
                with pytest.raises(Unanswered, match="timed out") as caught:
                    await request(http, "GET", server.url + "/resource", what="reading")
                await server.client_closed()
            finally:
                await http.close()
        assert caught.value.retryable
        assert 0 < server.sent < answer.length

    run(scenario())
