"""Inbound media CloudLink can open: fetched through the gateway with the account's
credentials (the admin API, or a signed, expiring link pushed in message.received), its
type and size checked, streamed; credentials never sent to another origin."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from pydantic import SecretStr

from gateway.chat.media import link_holds, media_link
from gateway.security import SecretBox, generate_key
from tests.gateway.messaging.conftest import TWILIO_SID, Stack, open_stack
from tests.gateway.messaging.test_window import _conversation
from tests.support.waiting import eventually

PICTURE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 300  # a JPEG-ish 76.8 KB


def _inbound_with_media(
    stack: Stack, content: bytes = PICTURE, content_type: str = "image/jpeg"
) -> dict[str, Any]:
    path = stack.twilio.add_media(TWILIO_SID, content, content_type)
    answer = stack.twilio_inbound("see this", media=[(stack.twilio_url + path, content_type)])
    assert answer.status_code == 200, answer.text
    [message] = stack.messages(_conversation(stack)["id"])
    return message


def test_a_medium_is_fetched_with_the_accounts_credentials_and_streamed(stack: Stack) -> None:
    """The admin API answers the medium itself; Twilio's Media URL got the account's basic
    auth, its CDN (another origin) got none."""
    message = _inbound_with_media(stack)
    answer = stack.api("GET", f"/messages/{message['id']}/media/0")
    assert answer.status_code == 200, answer.text
    assert answer.content == PICTURE
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["content-length"] == str(len(PICTURE))
    assert answer.headers["content-disposition"].startswith("inline")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in answer.headers["content-security-policy"]
    assert stack.twilio.requests["media"] == 1
    [cdn] = stack.twilio.cdn_requests
    assert cdn["authorization"] is None


def test_message_received_carries_a_signed_expiring_link_that_needs_no_token(
    stack: Stack,
) -> None:
    message = _inbound_with_media(stack)
    eventually(lambda: bool(stack.cloudlink.events("message.received")), what="the push")
    [event] = stack.cloudlink.events("message.received")
    [medium] = event["data"]["media"]
    link = medium["gateway_url"]
    assert link.startswith(f"{stack.url}/media/{stack.account_id}/{message['id']}/0?")
    assert medium["gateway_url_expires_at"] > time.time() + 23 * 3600
    assert TWILIO_SID not in link
    opened = httpx2.get(link)
    assert opened.status_code == 200
    assert opened.content == PICTURE
    parts = urlsplit(link)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    tampered = [
        {**query, "signature": query["signature"][:-2] + "AA"},
        {**query, "expires": str(int(query["expires"]) + 1)},
        {"expires": query["expires"]},
    ]
    for params in tampered:
        refused = httpx2.get(f"{stack.url}{parts.path}?{urlencode(params)}")
        assert refused.status_code == 403, refused.text
    other_index = httpx2.get(f"{stack.url}{parts.path[:-1]}1?{parts.query}")
    assert other_index.status_code == 403
    assert stack.twilio.requests["media"] == 1


def test_a_link_holds_until_it_expires_and_across_a_key_rotation() -> None:
    old, new = generate_key(), generate_key()
    before = SecretBox([_secret(old)])
    link = media_link(
        before, "https://gw.example", account_id="a", message_id="m", index=0, expires=2000
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    rotated = SecretBox([_secret(new), _secret(old)])
    names = {"account_id": "a", "message_id": "m", "index": 0}
    assert link_holds(rotated, **names, **query, now=1999)
    assert not link_holds(rotated, **names, **query, now=2000)
    assert not link_holds(SecretBox([_secret(new)]), **names, **query, now=1999)
    assert not link_holds(rotated, **{**names, "index": 1}, **query, now=1999)


def _secret(key: str) -> SecretStr:
    return SecretStr(key)


@pytest.mark.one_backend
@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/x-sh"])
def test_a_medium_of_a_type_not_to_pass_on_is_refused(stack: Stack, content_type: str) -> None:
    message = _inbound_with_media(stack, b"<script>alert(1)</script>", content_type)
    answer = stack.api("GET", f"/messages/{message['id']}/media/0")
    assert answer.status_code == 422, answer.text
    assert content_type in answer.json()["detail"]


@pytest.mark.one_backend
def test_a_medium_over_the_cap_is_refused(stack_settings: Any, fakes: Any) -> None:
    with open_stack(stack_settings, fakes, media_max_bytes=4096) as stack:
        message = _inbound_with_media(stack)
        answer = stack.api("GET", f"/messages/{message['id']}/media/0")
        assert answer.status_code == 422, answer.text
        assert "GATEWAY_MEDIA_MAX_BYTES" in answer.json()["detail"]


@pytest.mark.one_backend
def test_media_that_is_not_there_is_404(stack: Stack) -> None:
    message = _inbound_with_media(stack)
    assert stack.api("GET", f"/messages/{message['id']}/media/1").status_code == 404
    assert stack.api("GET", "/messages/no-such-message/media/0").status_code == 404
    assert stack.api("GET", f"/messages/{message['id']}/media/10").status_code == 400
    other = stack.http.post("/api/v1/accounts", json={"name": "Other"}).json()["id"]
    answer = stack.http.get(f"/api/v1/accounts/{other}/messages/{message['id']}/media/0")
    assert answer.status_code == 404


def test_a_cm_medium_is_fetched_until_its_link_expires(stack: Stack) -> None:
    path = stack.cm.add_media(b"%PDF-1.7 invoice", "application/pdf")
    media = {"mediaUri": stack.cm_url + path, "contentType": "application/pdf", "title": "x"}
    assert stack.cm_inbound("invoice", media=media).status_code == 200
    channel = stack.cm_channel["id"]
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel]
    [message] = stack.messages(conversation["id"])
    answer = stack.api("GET", f"/messages/{message['id']}/media/0")
    assert answer.status_code == 200, answer.text
    assert answer.content == b"%PDF-1.7 invoice"
    assert answer.headers["content-disposition"].startswith("attachment")
    stack.cm.expire_media()
    gone = stack.api("GET", f"/messages/{message['id']}/media/0")
    assert gone.status_code == 404
    assert "no longer holds" in gone.json()["detail"]
