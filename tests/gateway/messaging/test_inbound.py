"""Inbound webhooks: verified, stored once, acknowledged after the commit, pushed on."""

from __future__ import annotations

import concurrent.futures
import json
import threading
from typing import Any

import pytest
from sqlalchemy import select, update

from gateway.chat import service as chat
from gateway.chat.models import InboundMessage
from gateway.events.service import OPERATOR_CLI
from storage.engine import Database
from storage.tables import CONTACTS, CONVERSATIONS, utcnow
from tests.fakes.cmcom import mo_message
from tests.fakes.twilio import new_sid, sign_twilio_json
from tests.gateway.messaging.conftest import (
    BUSINESS,
    CUSTOMER,
    QUEUE,
    TWILIO_SID,
    TWILIO_TOKEN,
    Stack,
)
from tests.support import feed
from tests.support.sync import run
from tests.support.waiting import eventually

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def test_whatsapp_message_opens_a_conversation_in_the_feed_and_at_cloudlink(
    stack: Stack,
) -> None:
    """A signed inbound message is answered with empty TwiML, opens a conversation on the
    channel's queue, and reaches the feed and the CloudLink endpoint."""
    answer = stack.twilio_inbound("Where is my order?", name="Ada Lovelace")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/xml")
    assert answer.text == TWIML
    [conversation] = stack.conversations()
    assert conversation["channel_id"] == stack.twilio_channel["id"]
    assert conversation["queue_id"] == QUEUE
    assert conversation["status"] == "open"
    assert conversation["address"] == "whatsapp:" + CUSTOMER
    assert conversation["name"] == "Ada Lovelace"
    [message] = stack.messages(conversation["id"])
    assert (message["direction"], message["text"]) == ("inbound", "Where is my order?")
    types = stack.feed_types()
    assert types[-2:] == ["conversation.opened", "message.received"]
    eventually(
        lambda: (
            {"conversation.opened", "message.received"}
            <= {e["type"] for e in stack.cloudlink.received}
        ),
        what="events at CloudLink",
    )
    pushed = next(e for e in stack.cloudlink.received if e["type"] == "message.received")
    assert pushed["data"]["text"] == "Where is my order?"
    assert stack.cloudlink.rejected == []


def test_a_second_message_reuses_the_open_conversation(stack: Stack) -> None:
    """Messages of one contact go to its open conversation; another contact opens its own."""
    assert stack.twilio_inbound("one").status_code == 200
    assert stack.twilio_inbound("two").status_code == 200
    assert stack.twilio_inbound("three", sender="+31687654321").status_code == 200
    conversations = stack.conversations()
    assert len(conversations) == 2
    mine = next(c for c in conversations if c["address"] == "whatsapp:" + CUSTOMER)
    assert [m["text"] for m in stack.messages(mine["id"])] == ["one", "two"]


def test_media_keeps_urls_and_content_types(stack: Stack) -> None:
    """Attachments are stored with their URLs and content types."""
    extra = {
        "NumMedia": "2",
        "MediaUrl0": "https://api.twilio.com/media/ME1",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": "https://api.twilio.com/media/ME2",
        "MediaContentType1": "application/pdf",
    }
    assert stack.twilio_inbound("see attached", extra=extra).status_code == 200
    [conversation] = stack.conversations()
    [message] = stack.messages(conversation["id"])
    assert message["media"] == [
        {"url": "https://api.twilio.com/media/ME1", "content_type": "image/jpeg", "title": None},
        {
            "url": "https://api.twilio.com/media/ME2",
            "content_type": "application/pdf",
            "title": None,
        },
    ]


def test_a_retried_webhook_is_stored_once(stack: Stack) -> None:
    """The same MessageSid (and idempotency token) again is acknowledged, not stored again."""
    sid = new_sid("SM")
    first = stack.twilio_inbound("once", sid=sid, token="token-1")
    again = stack.twilio_inbound("once", sid=sid, token="token-1")
    without_token = stack.twilio_inbound("once", sid=sid)
    assert [r.status_code for r in (first, again, without_token)] == [200, 200, 200]
    [conversation] = stack.conversations()
    assert len(stack.messages(conversation["id"])) == 1
    assert stack.feed_types().count("message.received") == 1


def test_concurrent_retries_store_one_message(stack: Stack) -> None:
    """Twenty copies of one webhook at once: one message, one event, all acknowledged."""
    sid = new_sid("SM")
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(
            pool.map(lambda _: stack.twilio_inbound("race", sid=sid, token="t"), range(20))
        )
    assert {a.status_code for a in answers} == {200}
    [conversation] = stack.conversations()
    assert len(stack.messages(conversation["id"])) == 1
    assert stack.feed_types().count("message.received") == 1


def test_cm_message_is_stored_once_across_retries(stack: Stack) -> None:
    """CM.com's MO JSON opens a conversation; the same content again is a retry."""
    first = stack.cm_inbound("Hallo", time_utc="2026-11-29T17:00:00", reference="ref-1")
    again = stack.cm_inbound("Hallo", time_utc="2026-11-29T17:00:00", reference="ref-1")
    later = stack.cm_inbound("Hallo", time_utc="2026-11-29T17:05:00", reference="ref-2")
    assert [r.status_code for r in (first, again, later)] == [200, 200, 200]
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == stack.cm_channel["id"]]
    assert [m["text"] for m in stack.messages(conversation["id"])] == ["Hallo", "Hallo"]


def test_a_new_contacts_concurrent_first_messages_share_one_conversation(stack: Stack) -> None:
    """Ten first messages of one new sender at once (no account lock): one contact, one
    conversation, ten messages."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(
            pool.map(lambda i: stack.twilio_inbound(f"m{i}", sender="+31699999999"), range(10))
        )
    assert {a.status_code for a in answers} == {200}
    [conversation] = stack.conversations()
    assert len(stack.messages(conversation["id"])) == 10
    assert stack.feed_types().count("conversation.opened") == 1


def test_a_feed_reader_misses_nothing_while_webhooks_commit_concurrently(stack: Stack) -> None:
    """Webhooks commit without an account lock, in any order on PostgreSQL; a reader
    following the feed meanwhile still sees every event once, in cursor order."""
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    _, committed = feed.of_account(stack.api)

    def follow() -> None:
        seen.extend(
            feed.follow(
                lambda cursor: stack.api("GET", f"/feed?after={cursor}&limit=50").json(),
                done,
                committed,
            )
        )

    reader = threading.Thread(target=follow)
    reader.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda i: stack.twilio_inbound(f"m{i}", sender=f"+316{i % 5:08d}"), range(60))
        )
    done.set()
    reader.join(timeout=60)
    assert {a.status_code for a in answers} == {200}
    everything = stack.feed()
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    positions = feed.positions(seen)
    assert positions == sorted(set(positions))


def test_a_json_body_is_verified_through_its_body_hash(stack: Stack) -> None:
    """Twilio signs JSON bodies over the URL with bodySHA256; a changed body is refused."""
    body = json.dumps(
        {
            "MessageSid": new_sid("SM"),
            "AccountSid": TWILIO_SID,
            "From": "whatsapp:" + CUSTOMER,
            "To": "whatsapp:" + BUSINESS,
            "Body": "sent as JSON",
        }
    )
    url, signature = sign_twilio_json(TWILIO_TOKEN, stack.twilio_channel["webhook_url"], body)
    path = "/webhooks/" + url.split("/webhooks/", 1)[1]
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/json"}
    assert stack.http.post(path, content=body, headers=headers).status_code == 200
    tampered = body.replace("sent as JSON", "tampered")
    assert stack.http.post(path, content=tampered, headers=headers).status_code == 403
    [conversation] = stack.conversations()
    assert [m["text"] for m in stack.messages(conversation["id"])] == ["sent as JSON"]


def test_two_identical_cm_messages_in_one_second_are_both_stored(stack: Stack) -> None:
    """The same text twice within CM.com's one-second time: its reference tells them apart."""
    for reference in ("ref-a", "ref-b"):
        answer = stack.cm_inbound("ok", time_utc="2026-11-29T17:00:00", reference=reference)
        assert answer.status_code == 200
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == stack.cm_channel["id"]]
    assert [m["text"] for m in stack.messages(conversation["id"])] == ["ok", "ok"]


def test_cm_writes_the_channel_number_with_or_without_its_international_prefix(
    stack: Stack,
) -> None:
    """to.number as +E.164, 00-prefixed or bare digits is the channel's own number."""
    for to in (BUSINESS, "00" + BUSINESS[1:], BUSINESS[1:]):
        body = mo_message(from_number=CUSTOMER, to_number=to, text=f"to {to}")
        path = "/webhooks/" + stack.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
        assert stack.http.post(path, json=body).status_code == 200, to
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == stack.cm_channel["id"]]
    assert len(stack.messages(conversation["id"])) == 3


def test_a_message_in_one_statement_writes_nothing_if_what_it_read_changed(
    stack: Stack, db: Database
) -> None:
    """PostgreSQL: between the read of the contact's open conversation and the statement,
    the conversation was closed, or the contact renamed: the statement writes nothing (the
    transaction then does what is needed). Once both hold again, it stores the message."""
    if not db.writes_in_one_statement:
        pytest.skip("SQLite stores a message in one transaction of several statements")
    assert stack.twilio_inbound("first", name="Ada").status_code == 200
    [conversation] = stack.conversations()
    with db.engine.connect() as conn:
        contact = conn.execute(select(CONTACTS)).one()
    message = InboundMessage(
        channel_id=stack.twilio_channel["id"],
        account_id=stack.account_id,
        queue_id=QUEUE,
        contact_address=contact.address,
        local_address="whatsapp:" + BUSINESS,
        contact_name="Ada",
        text="second",
        media=[],
        provider_message_id=new_sid("SM"),
        dedup_keys=[],
        received_at=utcnow(),
    )
    where = {"channel_id": message.channel_id, "address": message.contact_address}
    found = run(db.read(chat._found, where))
    assert found.conversation_id == conversation["id"]

    def change(statement: Any) -> None:
        with db.engine.begin() as conn:
            conn.execute(statement)

    change(update(CONVERSATIONS).values(status="closed"))
    assert run(chat._write_received(db, message, OPERATOR_CLI, found)) is None
    change(update(CONVERSATIONS).values(status="open"))
    change(update(CONTACTS).values(name="Bob"))
    assert run(chat._write_received(db, message, OPERATOR_CLI, found)) is None
    assert [m["text"] for m in stack.messages(conversation["id"])] == ["first"]
    assert stack.feed_types().count("message.received") == 1

    change(update(CONTACTS).values(name="Ada"))
    receipt = run(chat._write_received(db, message, OPERATOR_CLI, found))
    assert receipt is not None
    assert receipt.conversation_id == conversation["id"]
    assert [m["text"] for m in stack.messages(conversation["id"])] == ["first", "second"]
    assert stack.feed_types().count("message.received") == 2
