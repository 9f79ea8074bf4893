"""Integrations and channels as an admin configures them, against the fake Twilio."""

from __future__ import annotations

from tests.fakes.twilio import inbound_message_params, new_sid, sign_twilio
from tests.gateway.messaging.conftest import (
    BUSINESS,
    CM_TOKEN,
    QUEUE,
    TWILIO_SID,
    TWILIO_TOKEN,
    Stack,
)
from tests.support.waiting import eventually

SMS_NUMBER = "+14155550123"


def test_secrets_are_masked_everywhere(stack: Stack) -> None:
    """Neither the Auth Token nor the product token appears in any response or event."""
    listing = stack.api("GET", "/integrations").text
    history = stack.api("GET", "/events").text
    feed = str(stack.feed())
    for text in (listing, history, feed):
        assert TWILIO_TOKEN not in text
        assert CM_TOKEN not in text
    twilio = next(
        i for i in stack.api("GET", "/integrations").json()["items"] if i["kind"] == "twilio"
    )
    assert twilio["status"] == "active"
    assert twilio["config"]["account_sid"] == TWILIO_SID
    assert twilio["config"]["auth_token"] == "••••" + TWILIO_TOKEN[-4:]


def test_channel_answers_carrying_the_cm_secret_url_are_never_stored(stack: Stack) -> None:
    """The CM.com channel's URL holds its secret: listing it says Cache-Control no-store."""
    listing = stack.api("GET", "/channels")
    assert stack.cm_channel["webhook_url"] in listing.text
    assert listing.headers["cache-control"] == "no-store"


def test_rejected_twilio_credentials_store_nothing(stack: Stack) -> None:
    """A pair Twilio refuses is a 422 naming Twilio's answer; the stored one is unchanged."""
    before = stack.api("GET", "/integrations").json()
    events = len(stack.feed())
    answer = stack.api(
        "PUT",
        "/integrations/twilio/settings",
        json={"name": "New", "account_sid": TWILIO_SID, "auth_token": "wrong-token-0000"},
    )
    assert answer.status_code == 422
    assert "Twilio refused" in answer.json()["detail"]
    assert stack.api("GET", "/integrations").json() == before
    assert len(stack.feed()) == events


def test_a_twilio_sms_channel_gets_its_url_set_and_cleared(stack: Stack) -> None:
    """Adding a Twilio SMS channel points the number's SmsUrl at the channel; deleting the
    channel clears it, through the outbox."""
    stack.twilio.add_number(TWILIO_SID, SMS_NUMBER)
    answer = stack.api(
        "POST",
        "/channels",
        json={"provider": "twilio", "type": "sms", "number": SMS_NUMBER, "queue_id": QUEUE},
    )
    assert answer.status_code == 201, answer.text
    channel = answer.json()
    assert channel["webhook_setup"] == "automatic"
    assert stack.twilio.number(SMS_NUMBER)["sms_url"] == channel["webhook_url"]
    assert stack.twilio_channel["webhook_setup"] == "manual"
    deleted = stack.api(
        "POST", "/channels/delete", json={"ids": [channel["id"]], "confirm": "confirm"}
    )
    assert deleted.json() == {"deleted": [channel["id"]]}
    eventually(lambda: not stack.twilio.number(SMS_NUMBER)["sms_url"], what="SmsUrl cleared")


def test_a_number_the_account_does_not_own_is_refused(stack: Stack) -> None:
    """422 listing the account's numbers; no channel is added."""
    before = stack.api("GET", "/channels").json()
    answer = stack.api(
        "POST",
        "/channels",
        json={
            "provider": "twilio",
            "type": "whatsapp",
            "number": "+14155550999",
            "queue_id": QUEUE,
        },
    )
    assert answer.status_code == 422
    assert BUSINESS in answer.json()["detail"]
    assert stack.api("GET", "/channels").json() == before


def test_one_live_channel_per_number(stack: Stack) -> None:
    """A second WhatsApp channel on the same number is a conflict."""
    answer = stack.api(
        "POST",
        "/channels",
        json={"provider": "twilio", "type": "whatsapp", "number": BUSINESS, "queue_id": "other"},
    )
    assert answer.status_code == 409


def test_deleting_channels_needs_the_confirmation_and_is_all_or_nothing(stack: Stack) -> None:
    """Without "confirm", or with one unknown id, nothing is deleted; after deletion the
    channel's webhook URL answers 404."""
    ids = [stack.twilio_channel["id"], stack.cm_channel["id"]]
    refused = stack.api("POST", "/channels/delete", json={"ids": ids, "confirm": "yes"})
    assert refused.status_code == 400
    unknown = stack.api(
        "POST", "/channels/delete", json={"ids": [*ids, "nope"], "confirm": "confirm"}
    )
    assert unknown.status_code == 404
    assert len(stack.api("GET", "/channels").json()["items"]) == 2
    assert stack.twilio_inbound("still here").status_code == 200
    done = stack.api("POST", "/channels/delete", json={"ids": ids, "confirm": "confirm"})
    assert done.json() == {"deleted": ids}
    assert stack.api("GET", "/channels").json()["items"] == []
    assert stack.twilio_inbound("gone").status_code == 404
    [conversation] = stack.conversations()
    assert [m["text"] for m in stack.messages(conversation["id"])] == ["still here"]


def test_an_integration_in_use_cannot_be_removed(stack: Stack) -> None:
    """Removing Twilio while a channel uses it is refused, naming the channel."""
    answer = stack.api("DELETE", "/integrations/twilio")
    assert answer.status_code == 409
    assert stack.twilio_channel["id"] in answer.json()["detail"]
    stack.api(
        "POST",
        "/channels/delete",
        json={"ids": [stack.twilio_channel["id"]], "confirm": "confirm"},
    )
    assert stack.api("DELETE", "/integrations/twilio").status_code == 204


def test_messenger_channels_take_pages(stack: Stack) -> None:
    """A Messenger channel answers for its pages; messages to a page open conversations."""
    stack.twilio.add_messenger_page(TWILIO_SID, "1234567890")
    answer = stack.api(
        "POST",
        "/channels",
        json={
            "provider": "twilio",
            "type": "messenger",
            "pages": ["1234567890", "555"],
            "queue_id": QUEUE,
        },
    )
    assert answer.status_code == 201, answer.text
    channel = answer.json()
    assert channel["pages"] == ["1234567890", "555"]
    stack.twilio_channel = channel
    params = inbound_message_params(
        account_sid=TWILIO_SID,
        from_="messenger:987",
        to="messenger:555",
        body="hi page",
        message_sid=new_sid("SM"),
    )
    url = channel["webhook_url"]
    signed = {"X-Twilio-Signature": sign_twilio(TWILIO_TOKEN, url, params)}
    path = "/webhooks/" + url.split("/webhooks/", 1)[1]
    assert stack.http.post(path, data=params, headers=signed).status_code == 200
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel["id"]]
    assert conversation["address"] == "messenger:987"
