"""A NUL character in a provider's message is replaced, the message kept (decision 0015)."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.twilio import new_sid, sign_twilio_json
from tests.gateway.messaging.conftest import BUSINESS, CUSTOMER, TWILIO_SID, TWILIO_TOKEN, Stack

REPLACED = "\ufffd"


def _only_messages(stack: Stack, channel: dict[str, Any]) -> list[dict[str, Any]]:
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel["id"]]
    return stack.messages(conversation["id"])


def _no_nul_anywhere(stack: Stack) -> None:
    everything = json.dumps([stack.feed(), stack.conversations()], ensure_ascii=False)
    assert "\x00" not in everything


def test_a_signed_twilio_form_with_nul_is_stored_with_the_nul_replaced(stack: Stack) -> None:
    """%00 in Body, ProfileName and MessageSid: 200, the message kept without NUL, and
    Twilio's retry of it is still recognised."""
    sid = "SM\x00" + new_sid("SM")[2:]
    answer = stack.twilio_inbound("a\x00b", sid=sid, name="A\x00da")
    assert answer.status_code == 200, answer.text
    [message] = _only_messages(stack, stack.twilio_channel)
    assert message["text"] == f"a{REPLACED}b"
    assert message["provider_message_id"] == sid.replace("\x00", REPLACED)
    [conversation] = stack.conversations()
    assert conversation["contact"]["name"] == f"A{REPLACED}da"
    again = stack.twilio_inbound("a\x00b", sid=sid, name="A\x00da")
    assert again.status_code == 200
    assert len(_only_messages(stack, stack.twilio_channel)) == 1
    _no_nul_anywhere(stack)


def test_a_signed_twilio_json_body_with_nul_is_stored_with_the_nul_replaced(
    stack: Stack,
) -> None:
    """A JSON body's \\u0000 goes through the shared reader: replaced, never stored."""
    body = json.dumps(
        {
            "MessageSid": new_sid("SM"),
            "AccountSid": TWILIO_SID,
            "From": "whatsapp:" + CUSTOMER,
            "To": "whatsapp:" + BUSINESS,
            "Body": "nul\x00inside",
            "ProfileName": "Ad\x00a",
        }
    )
    assert "\\u0000" in body
    url, signature = sign_twilio_json(TWILIO_TOKEN, stack.twilio_channel["webhook_url"], body)
    path = "/webhooks/" + url.split("/webhooks/", 1)[1]
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/json"}
    assert stack.http.post(path, content=body, headers=headers).status_code == 200
    [message] = _only_messages(stack, stack.twilio_channel)
    assert message["text"] == f"nul{REPLACED}inside"
    _no_nul_anywhere(stack)


def test_a_cm_message_with_nul_is_stored_with_the_nul_replaced(stack: Stack) -> None:
    """CM.com's JSON with \\u0000 in the text and the sender's name: kept, NUL replaced."""
    answer = stack.cm_inbound("x\x00y", name="N\x00")
    assert answer.status_code == 200, answer.text
    [message] = _only_messages(stack, stack.cm_channel)
    assert message["text"] == f"x{REPLACED}y"
    _no_nul_anywhere(stack)
