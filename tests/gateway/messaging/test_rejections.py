"""Every refused webhook gets its status, a reason, and stores nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from gateway.settings import Settings
from tests.conftest import FAILURE_BURST
from tests.fakes.cmcom import mo_message
from tests.fakes.twilio import inbound_message_params, new_sid, sign_twilio
from tests.gateway.messaging.conftest import (
    BUSINESS,
    CUSTOMER,
    TWILIO_SID,
    TWILIO_TOKEN,
    Stack,
)
from tests.support.live import free_port, live_server


def _state(stack: Stack) -> tuple[int, int]:
    return len(stack.feed()), len(stack.conversations())


def _signed(stack: Stack, params: dict[str, str], url: str | None = None) -> dict[str, str]:
    target = url or stack.twilio_channel["webhook_url"]
    return {"X-Twilio-Signature": sign_twilio(TWILIO_TOKEN, target, params)}


def _params(**overrides: str) -> dict[str, str]:
    params = inbound_message_params(
        account_sid=TWILIO_SID,
        from_="whatsapp:" + CUSTOMER,
        to="whatsapp:" + BUSINESS,
        body="hi",
        message_sid=new_sid("SM"),
    )
    params.update(overrides)
    return params


def _twilio_path(stack: Stack) -> str:
    return "/webhooks/" + stack.twilio_channel["webhook_url"].split("/webhooks/", 1)[1]


CASES: dict[str, Callable[[Stack], tuple[httpx2.Response, int, str]]] = {}


def case(status: int, reason: str) -> Callable[[Any], Any]:
    def register(fn: Callable[[Stack], httpx2.Response]) -> Any:
        CASES[fn.__name__] = lambda stack: (fn(stack), status, reason)
        return fn

    return register


@case(404, "unknown_channel")
def unknown_twilio_channel(stack: Stack) -> httpx2.Response:
    params = _params()
    url = stack.url + "/webhooks/twilio/00000000-0000-4000-8000-000000000000"
    return stack.http.post(url, data=params, headers=_signed(stack, params, url))


@case(403, "signature")
def bad_signature(stack: Stack) -> httpx2.Response:
    params = _params()
    return stack.http.post(
        _twilio_path(stack), data=params, headers={"X-Twilio-Signature": "bm9wZQ=="}
    )


@case(403, "signature")
def missing_signature(stack: Stack) -> httpx2.Response:
    return stack.http.post(_twilio_path(stack), data=_params())


@case(403, "signature")
def signed_with_another_token(stack: Stack) -> httpx2.Response:
    params = _params()
    signature = sign_twilio("another-token-0123456789", stack.twilio_channel["webhook_url"], params)
    return stack.http.post(
        _twilio_path(stack), data=params, headers={"X-Twilio-Signature": signature}
    )


@case(403, "signature")
def parameter_changed_after_signing(stack: Stack) -> httpx2.Response:
    params = _params()
    headers = _signed(stack, params)
    params["Body"] = "tampered"
    return stack.http.post(_twilio_path(stack), data=params, headers=headers)


@case(400, "malformed")
def missing_message_sid(stack: Stack) -> httpx2.Response:
    params = _params()
    del params["MessageSid"]
    return stack.http.post(_twilio_path(stack), data=params, headers=_signed(stack, params))


@case(400, "malformed")
def neither_text_nor_media(stack: Stack) -> httpx2.Response:
    params = _params(Body="")
    return stack.http.post(_twilio_path(stack), data=params, headers=_signed(stack, params))


@case(400, "malformed")
def bad_media_count(stack: Stack) -> httpx2.Response:
    params = _params(NumMedia="99")
    return stack.http.post(_twilio_path(stack), data=params, headers=_signed(stack, params))


@case(400, "wrong_channel")
def sent_to_another_number(stack: Stack) -> httpx2.Response:
    params = _params(To="whatsapp:+14155550199")
    return stack.http.post(_twilio_path(stack), data=params, headers=_signed(stack, params))


@case(400, "malformed")
def not_a_form(stack: Stack) -> httpx2.Response:
    return stack.http.post(
        _twilio_path(stack), content=b"<xml/>", headers={"Content-Type": "text/xml"}
    )


@case(413, "too_large")
def oversized_twilio_body(stack: Stack) -> httpx2.Response:
    params = _params(Body="x" * 70_000)
    return stack.http.post(_twilio_path(stack), data=params, headers=_signed(stack, params))


@case(404, "unknown_channel")
def unknown_cm_channel(stack: Stack) -> httpx2.Response:
    body = mo_message(from_number=CUSTOMER, to_number=BUSINESS, text="hi")
    return stack.http.post("/webhooks/cm/00000000-0000-4000-8000-000000000000/secret", json=body)


@case(403, "signature")
def wrong_cm_secret(stack: Stack) -> httpx2.Response:
    body = mo_message(from_number=CUSTOMER, to_number=BUSINESS, text="hi")
    return stack.http.post(f"/webhooks/cm/{stack.cm_channel['id']}/wrong-secret", json=body)


@case(400, "malformed")
def cm_without_sender(stack: Stack) -> httpx2.Response:
    body = mo_message(from_number=CUSTOMER, to_number=BUSINESS, text="hi")
    del body["from"]
    path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
    return stack.http.post(path, json=body)


@case(400, "wrong_channel")
def cm_sent_to_another_number(stack: Stack) -> httpx2.Response:
    body = mo_message(from_number=CUSTOMER, to_number="+14155550199", text="hi")
    path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
    return stack.http.post(path, json=body)


@case(400, "malformed")
def cm_not_json(stack: Stack) -> httpx2.Response:
    path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
    return stack.http.post(path, content=b"{not json", headers={"Content-Type": "application/json"})


@case(413, "too_large")
def oversized_cm_body(stack: Stack) -> httpx2.Response:
    body = mo_message(from_number=CUSTOMER, to_number=BUSINESS, text="x" * 300_000)
    path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
    return stack.http.post(path, json=body)


@case(403, "signature")
def json_body_hash_not_ascii(stack: Stack) -> httpx2.Response:
    return stack.http.post(
        _twilio_path(stack) + "?bodySHA256=%C3%A9",
        content=b"{}",
        headers={"Content-Type": "application/json", "X-Twilio-Signature": "bm9wZQ=="},
    )


@case(400, "malformed")
def sender_too_long(stack: Stack) -> httpx2.Response:
    params = _params(From="whatsapp:+" + "1" * 300)
    return stack.http.post(_twilio_path(stack), data=params, headers=_signed(stack, params))


@case(400, "malformed")
def cm_sender_too_long(stack: Stack) -> httpx2.Response:
    body = mo_message(from_number="3" * 300, to_number=BUSINESS, text="hi")
    path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
    return stack.http.post(path, json=body)


@case(400, "malformed")
def cm_status_code_not_a_number(stack: Stack) -> httpx2.Response:
    report = {"messages": {"msg": {"reference": "r", "status": {"code": "\u00b2"}}}}
    path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
    return stack.http.post(path, json=report)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_webhooks_store_nothing(stack: Stack, name: str) -> None:
    """Each bad webhook gets its status and a plain-text reason; nothing is stored."""
    before = _state(stack)
    answer, status, reason = CASES[name](stack)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.text.startswith(str(status))
    assert _state(stack) == before
    metrics = stack.http.get("/metrics").text
    assert 'outcome="rejected",provider=' in metrics or "rejected" in metrics
    assert f'reason="{reason}"' in metrics


def test_signature_holds_behind_a_proxy(
    stack_settings: Callable[..., Settings], stack: Stack
) -> None:
    """Twilio signs the public URL (https, another host and port, a path prefix); the
    gateway, reached on plain http at its own port, checks against that URL."""
    port = free_port()
    public = "https://chat.example.com:8443/gateway"
    with live_server(stack_settings(port, public_url=public), port) as url:
        channel_url = f"{public}/webhooks/twilio/{stack.twilio_channel['id']}"
        params = _params()
        signed = _signed(stack, params, channel_url)
        answer = httpx2.post(
            f"{url}/webhooks/twilio/{stack.twilio_channel['id']}", data=params, headers=signed
        )
        assert answer.status_code == 200, answer.text
        direct = _signed(stack, params, f"{url}/webhooks/twilio/{stack.twilio_channel['id']}")
        params["MessageSid"] = new_sid("SM")
        refused = httpx2.post(
            f"{url}/webhooks/twilio/{stack.twilio_channel['id']}", data=params, headers=direct
        )
        assert refused.status_code == 403


def test_a_feed_cursor_beyond_64_bits_is_refused(stack: Stack) -> None:
    """A cursor no feed returned is a 400, however large."""
    for after in ("99999999999999999999", "9999999999999999999", "1.9999999999999999999"):
        assert stack.api("GET", f"/feed?after={after}").status_code == 400


def test_guessing_a_cm_channel_secret_is_throttled(stack: Stack) -> None:
    """After a burst of wrong secrets on one channel, that client gets 429 with Retry-After,
    the right secret included, and nothing is stored."""
    before = _state(stack)
    body = mo_message(from_number=CUSTOMER, to_number=BUSINESS, text="hi")
    channel = stack.cm_channel["id"]
    wrong = [
        stack.http.post(f"/webhooks/cm/{channel}/guess-{n}", json=body).status_code
        for n in range(FAILURE_BURST)
    ]
    assert wrong == [403] * FAILURE_BURST
    path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
    throttled = stack.http.post(path, json=body)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert _state(stack) == before
