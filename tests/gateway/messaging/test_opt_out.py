"""SMS opt-out: STOP and START recorded per contact and channel, told to CloudLink, a reply
to an opted-out contact refused at once, and Twilio's 21610 taken as an opt-out too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx2
import pytest

from gateway.chat.opt_out import change_of
from tests.fakes.twilio import new_sid
from tests.gateway.messaging.conftest import (
    BUSINESS,
    CUSTOMER,
    QUEUE,
    TWILIO_SID,
    Stack,
)
from tests.support.waiting import eventually


def test_keywords_and_opt_out_type() -> None:
    assert change_of("sms", " stop ") == "out"
    assert change_of("sms", "Unsubscribe") == "out"
    assert change_of("sms", "start") == "in"
    assert change_of("sms", "stop sending me the wrong parcel") is None
    assert change_of("sms", "whatever", "STOP") == "out"
    assert change_of("sms", "whatever", "START") == "in"
    assert change_of("sms", "STOP", "HELP") is None
    assert change_of("whatsapp", "STOP") is None


@pytest.fixture
def sms(stack: Stack) -> dict[str, Any]:
    """A Twilio SMS channel on the account's number."""
    answer = stack.api(
        "POST",
        "/channels",
        json={"provider": "twilio", "type": "sms", "number": BUSINESS, "queue_id": QUEUE},
    )
    assert answer.status_code == 201, answer.text
    channel: dict[str, Any] = answer.json()
    return channel


def _text(stack: Stack, channel: dict[str, Any], body: str) -> httpx2.Response:
    """The customer's SMS, as Twilio posts it (with OptOutType for a keyword)."""
    params = stack.twilio.inbound_params(
        account_sid=TWILIO_SID, from_=CUSTOMER, to=BUSINESS, body=body, message_sid=new_sid("SM")
    )
    return stack.post_twilio(channel["webhook_url"], params)


def _reply(stack: Stack, channel: dict[str, Any], text: str = "Your parcel left.") -> Any:
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel["id"]]
    return stack.api("POST", f"/conversations/{conversation['id']}/messages", json={"text": text})


def _opt_events(stack: Stack) -> list[dict[str, Any]]:
    return [e for e in stack.feed() if e["type"] in {"contact.opted_out", "contact.opted_in"}]


def test_stop_opts_the_contact_out_and_a_reply_is_refused(
    stack: Stack, sms: dict[str, Any]
) -> None:
    """409 opted_out, nothing queued; CloudLink hears contact.opted_out once."""
    assert _text(stack, sms, "Hello").status_code == 200
    assert _text(stack, sms, "STOP").status_code == 200
    assert _text(stack, sms, "stop").status_code == 200  # already out: no second event
    refused = _reply(stack, sms)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "opted_out"
    assert refused.json()["opted_out_at"]
    assert "START" in refused.json()["detail"]
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == sms["id"]]
    shown = conversation["contact"]["opted_out_at"].replace("Z", "+00:00")
    assert datetime.fromisoformat(shown) == datetime.fromisoformat(refused.json()["opted_out_at"])
    [event] = _opt_events(stack)
    assert event["type"] == "contact.opted_out"
    assert (event["data"]["reason"], event["data"]["channel_id"]) == ("keyword", sms["id"])
    assert event["data"]["contact"]["address"] == CUSTOMER
    assert "message.queued" not in stack.feed_types()
    assert stack.twilio.sent == []


def test_start_opts_the_contact_back_in(stack: Stack, sms: dict[str, Any]) -> None:
    """After START the same reply is queued and sent."""
    assert _text(stack, sms, "STOP").status_code == 200
    assert _reply(stack, sms).status_code == 409
    assert _text(stack, sms, "START").status_code == 200
    assert [e["type"] for e in _opt_events(stack)] == ["contact.opted_out", "contact.opted_in"]
    assert _reply(stack, sms).status_code == 202
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == sms["id"]]
    assert conversation["contact"]["opted_out_at"] is None
    eventually(lambda: len(stack.twilio.sent) == 1, what="the reply sent")
    assert stack.twilio.sent[0]["to"] == CUSTOMER


def test_twilios_21610_opts_the_contact_out(stack: Stack, sms: dict[str, Any]) -> None:
    """Twilio knew the contact opted out, the gateway did not: the send's 21610 fails the
    reply as opted_out, Twilio's code kept, and marks the contact, so the next reply is
    refused at once."""
    assert _text(stack, sms, "Hello").status_code == 200
    stack.twilio.opted_out.add((CUSTOMER, BUSINESS))
    accepted = _reply(stack, sms)
    assert accepted.status_code == 202, accepted.text
    message_id = accepted.json()["id"]
    eventually(lambda: stack.message(message_id)["status"] == "failed", what="the refused send")
    error = stack.message(message_id)["error"]
    assert (error["code"], error["provider_code"]) == ("opted_out", "21610")
    [event] = _opt_events(stack)
    assert (event["type"], event["data"]["reason"]) == ("contact.opted_out", "twilio 21610")
    assert _reply(stack, sms).status_code == 409
