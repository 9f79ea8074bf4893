"""A reply's media: given as URLs, each fetched and checked against what the channel
carries (type, size, how many) before anything is queued, then sent as the provider's
media (Twilio's MediaUrl, CM.com's richContent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import serve_app
from tests.gateway.messaging.conftest import Stack
from tests.gateway.messaging.test_window import _conversation
from tests.support.waiting import eventually

MIB = 1024 * 1024
FILES: dict[str, tuple[str, bytes]] = {
    "photo.jpg": ("image/jpeg", b"\xff\xd8\xff" + b"j" * 10_000),
    "big.jpg": ("image/jpeg", b"\xff\xd8\xff" + b"j" * (5 * MIB + 1)),
    "page.html": ("text/html", b"<script>alert(1)</script>"),
    "anim.gif": ("image/gif", b"GIF89a" + b"g" * 100),
    "voice.ogg": ("audio/ogg", b"OggS" + b"o" * (16 * MIB)),
}


@pytest.fixture
def host() -> Iterator[str]:
    """A web server holding the media a reply points at; /chunked/... sends no length."""

    async def serve(request: Request) -> Response:
        found = FILES.get(request.path_params["name"])
        if found is None:
            return Response(status_code=404)
        return Response(found[1], media_type=found[0])

    async def chunked(request: Request) -> Response:
        content_type, content = FILES[request.path_params["name"]]

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, len(content), 65536):
                yield content[start : start + 65536]

        return StreamingResponse(body(), media_type=content_type)

    app = Starlette(routes=[Route("/files/{name}", serve), Route("/chunked/{name}", chunked)])
    with serve_app(app) as url:
        yield url


def _reply(stack: Stack, body: dict[str, Any], via: str = "twilio") -> Any:
    if via == "twilio":
        assert stack.twilio_inbound("question").status_code == 200
        conversation = _conversation(stack)
    else:
        assert stack.cm_inbound("question").status_code == 200
        channel = stack.cm_channel["id"]
        [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel]
    return stack.api("POST", f"/conversations/{conversation['id']}/messages", json=body)


def test_a_reply_with_media_goes_out_as_twilios_media_url(stack: Stack, host: str) -> None:
    url = f"{host}/files/photo.jpg"
    answer = _reply(stack, {"text": "Here it is", "media": [{"url": url}]})
    assert answer.status_code == 202, answer.text
    eventually(lambda: bool(stack.twilio.sent), what="the send")
    [sent] = stack.twilio.sent
    assert sent["media_urls"] == [url]
    assert sent["body"] == "Here it is"
    message = stack.message(answer.json()["id"])
    assert message["media"] == [{"url": url, "content_type": "image/jpeg", "title": None}]
    [queued] = [e for e in stack.feed() if e["type"] == "message.queued"]
    assert queued["data"]["media"][0]["url"] == url


def test_media_alone_needs_no_text(stack: Stack, host: str) -> None:
    answer = _reply(stack, {"media": [{"url": f"{host}/chunked/photo.jpg"}]})
    assert answer.status_code == 202, answer.text
    eventually(lambda: bool(stack.twilio.sent), what="the send")
    assert "Body" not in stack.twilio.sent[0]["form"]


REFUSED = [
    ("page.html", "text/html"),
    ("big.jpg", "at most 5242880 bytes"),
    ("voice.ogg", "16777216"),
    ("anim.gif", "JPEG and PNG"),
]


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("path", "name", "named"),
    [
        *[("files", name, named) for name, named in REFUSED],
        *[("chunked", name, named) for name, named in REFUSED],
        ("files", "missing.jpg", "HTTP 404"),
    ],
)
def test_a_medium_the_channel_cannot_carry_is_refused_and_nothing_is_queued(
    stack: Stack, host: str, path: str, name: str, named: str
) -> None:
    """Each refused as the length is announced (files) or as it streams (chunked)."""
    answer = _reply(stack, {"text": "x", "media": [{"url": f"{host}/{path}/{name}"}]})
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["detail"]
    assert "Nothing was queued" in answer.json()["detail"]
    assert "message.queued" not in stack.feed_types()
    assert stack.twilio.sent == []


@pytest.mark.one_backend
def test_whatsapp_carries_one_medium_a_message(stack: Stack, host: str) -> None:
    url = f"{host}/files/photo.jpg"
    answer = _reply(stack, {"media": [{"url": url}, {"url": url}]})
    assert answer.status_code == 422, answer.text
    assert "at most 1" in answer.json()["detail"]


def test_a_cm_reply_carries_its_medium_in_rich_content(stack: Stack, host: str) -> None:
    url = f"{host}/files/photo.jpg"
    answer = _reply(stack, {"text": "Photo", "media": [{"url": url}]}, via="cm")
    assert answer.status_code == 202, answer.text
    eventually(lambda: bool(stack.cm.sent), what="the CM send")
    [sent] = stack.cm.sent
    assert sent["rich_content"]["conversation"][0]["media"]["mediaUri"] == url
    assert sent["body"] == "Photo"


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "body",
    [
        {"template": {"id": "HX1"}, "media": [{"url": "https://x.example/a.jpg"}]},
        {"media": []},
        {"media": [{"url": "ftp://x.example/a.jpg"}]},
        {"media": None, "text": "x"},
    ],
)
def test_media_is_given_as_urls_and_not_with_a_template(stack: Stack, body: dict[str, Any]) -> None:
    answer = _reply(stack, body)
    assert answer.status_code == 400, answer.text
