"""WhatsApp's and Messenger's 24-hour customer service window: shown on each conversation,
a free-form reply outside it refused at once, and opened again by the contact's message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from gateway.chat.window import WINDOW, closes_at, is_open
from storage.engine import Database
from storage.tables import MESSAGES
from tests.gateway.messaging.conftest import BUSINESS, CUSTOMER, Stack
from tests.support.waiting import eventually


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _conversation(stack: Stack) -> dict[str, Any]:
    channel = stack.twilio_channel["id"]
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel]
    return conversation


def _age_messages(db: Database, conversation_id: str, hours: float) -> None:
    """Move the conversation's messages ``hours`` into the past."""
    with db.engine.begin() as conn:
        rows = conn.execute(
            select(MESSAGES.c.pk, MESSAGES.c.created_at).where(
                MESSAGES.c.conversation_id == conversation_id
            )
        ).all()
        for pk, created_at in rows:  # in Python: SQLite keeps times as text
            conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.pk == pk)
                .values(created_at=created_at - timedelta(hours=hours))
            )


def test_only_whatsapp_and_messenger_have_a_window() -> None:
    wrote = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert closes_at("whatsapp", wrote) == wrote + WINDOW
    assert closes_at("messenger", wrote) == wrote + timedelta(hours=24)
    assert closes_at("sms", wrote) is None
    assert closes_at("whatsapp", None) is None
    assert is_open("sms", None, wrote)
    assert not is_open("whatsapp", None, wrote)
    assert is_open("whatsapp", wrote, wrote + timedelta(hours=23, minutes=59))
    assert not is_open("whatsapp", wrote, wrote + WINDOW)


def test_a_conversation_shows_when_its_window_closes(stack: Stack) -> None:
    """24 hours after the contact's last message, in the API, in message.received, and in
    conversation.opened (from the message that opened it)."""
    assert stack.twilio_inbound("first").status_code == 200
    assert stack.twilio_inbound("second").status_code == 200
    conversation = _conversation(stack)
    last = stack.messages(conversation["id"])[-1]
    assert last["text"] == "second"
    closes = _at(last["created_at"]) + timedelta(hours=24)
    assert _at(conversation["window_closes_at"]) == closes
    one = stack.api("GET", f"/conversations/{conversation['id']}").json()
    assert _at(one["window_closes_at"]) == closes
    [*_, received] = [e for e in stack.feed() if e["type"] == "message.received"]
    assert _at(received["data"]["window_closes_at"]) == closes
    [opened] = [e for e in stack.feed() if e["type"] == "conversation.opened"]
    first = stack.messages(conversation["id"])[0]
    opened_until = _at(first["created_at"]) + timedelta(hours=24)
    assert _at(opened["data"]["window_closes_at"]) == opened_until


def test_a_free_form_reply_outside_the_window_is_refused_and_nothing_is_queued(
    stack: Stack, db: Database
) -> None:
    """409 window_closed with the time it closed; no message stored, nothing sent."""
    assert stack.twilio_inbound("question").status_code == 200
    conversation = _conversation(stack)
    _age_messages(db, conversation["id"], 25)
    [inbound] = stack.messages(conversation["id"])
    answer = stack.api(
        "POST", f"/conversations/{conversation['id']}/messages", json={"text": "Sorry!"}
    )
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["error"] == "window_closed"
    closed = _at(inbound["created_at"]) + timedelta(hours=24)
    assert _at(body["window_closes_at"]) == closed
    assert "template" in body["detail"]
    assert closed.isoformat() in body["detail"]
    assert stack.messages(conversation["id"]) == [inbound]
    assert "message.queued" not in stack.feed_types()
    assert stack.twilio.sent == []
    assert _at(_conversation(stack)["window_closes_at"]) == closed


def test_the_contacts_new_message_opens_the_window_again(stack: Stack, db: Database) -> None:
    """After the contact writes again, the same reply is accepted and goes out."""
    assert stack.twilio_inbound("question").status_code == 200
    conversation = _conversation(stack)
    _age_messages(db, conversation["id"], 30)
    path = f"/conversations/{conversation['id']}/messages"
    assert stack.api("POST", path, json={"text": "Sorry!"}).status_code == 409
    assert stack.twilio_inbound("still there?").status_code == 200
    reopened = _at(_conversation(stack)["window_closes_at"])
    assert reopened > datetime.now(UTC) + timedelta(hours=23)
    assert stack.api("POST", path, json={"text": "Sorry!"}).status_code == 202


def test_twilio_stays_the_authority_on_the_window(stack: Stack) -> None:
    """A reply the gateway let through (its clock, its record) that Twilio refuses with
    63016 ends as the same window_closed failure, Twilio's code kept."""
    assert stack.twilio_inbound("question").status_code == 200
    conversation = _conversation(stack)
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    stack.twilio.customer_wrote("whatsapp:" + CUSTOMER, "whatsapp:" + BUSINESS, at=long_ago)
    path = f"/conversations/{conversation['id']}/messages"
    reply = stack.api("POST", path, json={"text": "Sorry!"})
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["id"]
    eventually(
        lambda: stack.message(message_id)["status"] == "failed",
        what="the refusal's status callback",
    )
    error = stack.message(message_id)["error"]
    assert (error["code"], error["provider_code"]) == ("window_closed", "63016")
    assert "Message Template" in error["message"]
