"""Agents' replies and events, out through the outbox: retries, dead letters, replay."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.settings import Settings
from tests.fakes.cloudlink import FakeCloudLink
from tests.fakes.cmcom import FakeCM, delivery_report, send_report
from tests.fakes.twilio import FakeTwilio
from tests.gateway.messaging.conftest import BUSINESS, CUSTOMER, Stack, open_stack
from tests.support.sync import run
from tests.support.waiting import eventually


def _reply(stack: Stack, text: str = "On its way!", *, via: str = "twilio") -> dict[str, Any]:
    if via == "twilio":
        assert stack.twilio_inbound("question").status_code == 200
    else:
        assert stack.cm_inbound("question").status_code == 200
    channel = stack.twilio_channel if via == "twilio" else stack.cm_channel
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel["id"]]
    answer = stack.api("POST", f"/conversations/{conversation['id']}/messages", json={"text": text})
    assert answer.status_code == 202, answer.text
    accepted: dict[str, Any] = answer.json()
    assert accepted["status"] == "pending"
    return accepted


def _message(stack: Stack, message_id: str) -> dict[str, Any]:
    found: dict[str, Any] = stack.api("GET", f"/messages/{message_id}").json()
    return found


def test_reply_goes_out_through_twilio_with_its_status_callback(stack: Stack) -> None:
    """The reply is sent from the channel's sender to the contact, with a StatusCallback on
    the channel's URL; the message records Twilio's id and the feed says it was sent."""
    reply = _reply(stack)
    eventually(lambda: _message(stack, reply["id"])["provider_message_id"] is not None)
    [sent] = stack.twilio.sent
    assert (sent["to"], sent["from"], sent["body"]) == (
        "whatsapp:" + CUSTOMER,
        "whatsapp:" + BUSINESS,
        "On its way!",
    )
    assert sent["status_callback"].startswith(stack.twilio_channel["webhook_url"])
    message = _message(stack, reply["id"])
    assert message["provider_message_id"] == sent["sid"]
    assert message["status"] == "queued"
    assert "message.sent" in stack.feed_types()


def test_status_only_moves_forward(stack: Stack) -> None:
    """Callbacks out of order (delivered before sent, failed after read) never move back;
    Twilio's retry of a callback is applied once."""
    reply = _reply(stack)
    eventually(lambda: bool(stack.twilio.sent))
    sid = stack.twilio.sent[0]["sid"]
    assert run(stack.twilio.send_status(sid, "delivered")) == 200
    assert run(stack.twilio.send_status(sid, "sent")) == 200
    assert _message(stack, reply["id"])["status"] == "delivered"
    assert run(stack.twilio.send_status(sid, "read")) == 200
    assert run(stack.twilio.resend_last_status()) == 200
    assert run(stack.twilio.send_status(sid, "failed", error_code="30008")) == 200
    assert _message(stack, reply["id"])["status"] == "read"
    changes = [e for e in stack.feed() if e["type"] == "message.status_changed"]
    assert [e["data"]["status"] for e in changes] == ["delivered", "read"]


def test_twilios_refusal_outside_the_window_is_window_closed_with_its_code_kept(
    stack: Stack,
) -> None:
    """An undelivered callback with Twilio's 63016 (outside WhatsApp's 24-hour window) is
    the gateway's ``window_closed`` failure; Twilio's code and message are kept."""
    reply = _reply(stack)
    eventually(lambda: bool(stack.twilio.sent))
    sid = stack.twilio.sent[0]["sid"]
    status = run(
        stack.twilio.send_status(
            sid, "undelivered", error_code="63016", error_message="Outside the 24h window"
        )
    )
    assert status == 200
    message = _message(stack, reply["id"])
    assert message["status"] == "undelivered"
    assert message["error"] == {
        "code": "window_closed",
        "message": "Outside the 24h window",
        "provider_code": "63016",
    }
    [change] = [e for e in stack.feed() if e["type"] == "message.status_changed"]
    assert (change["data"]["error_code"], change["data"]["provider_error_code"]) == (
        "window_closed",
        "63016",
    )


def test_any_other_failure_keeps_the_providers_code_as_it_is(stack: Stack) -> None:
    """A code the gateway has no name for is the failure's code and the provider's."""
    reply = _reply(stack)
    eventually(lambda: bool(stack.twilio.sent))
    sid = stack.twilio.sent[0]["sid"]
    assert run(stack.twilio.send_status(sid, "failed", error_code="30008")) == 200
    error = _message(stack, reply["id"])["error"]
    assert (error["code"], error["provider_code"]) == ("30008", "30008")


def test_429_then_success_sends_once(stack: Stack) -> None:
    """Twilio answers 429 with Retry-After, then accepts: one message sent, after a retry."""
    stack.twilio.fail_next(1, 429, retry_after="0")
    reply = _reply(stack)
    eventually(lambda: _message(stack, reply["id"])["provider_message_id"] is not None)
    assert stack.twilio.requests["messages"] == 2
    assert len(stack.twilio.sent) == 1


@pytest.fixture
def impatient(
    stack_settings: Callable[..., Settings],
    fakes: tuple[FakeTwilio, FakeCM, FakeCloudLink, dict[str, str]],
) -> Iterator[Stack]:
    """A gateway that waits half a second for any answer."""
    with open_stack(stack_settings, fakes, outbound_timeout=0.5) as built:
        yield built


def test_a_send_whose_answer_never_came_is_found_at_twilio_not_sent_twice(
    impatient: Stack,
) -> None:
    """Twilio takes the reply but its answer comes after the gateway gave up: the next
    attempt finds the message in Twilio's list and keeps its id instead of sending again."""
    impatient.twilio.answer_late(1, 2.0)
    reply = _reply(impatient)
    eventually(lambda: _message(impatient, reply["id"])["provider_message_id"] is not None)
    [sent] = impatient.twilio.sent
    assert _message(impatient, reply["id"])["provider_message_id"] == sent["sid"]
    assert impatient.twilio.requests["messages"] == 1
    assert impatient.twilio.requests["list_messages"] == 1
    assert _statuses_of(impatient, reply["id"]) == [
        ("message.queued", "pending"),
        ("message.sent", "queued"),
    ]


def test_a_lost_answer_is_not_taken_for_an_earlier_identical_reply(impatient: Stack) -> None:
    """The same text twice in a row: the first is sent and settled, the second's answer is
    lost. Twilio lists both; the second keeps its own message, not the first's."""
    first = _reply(impatient, "ok")
    eventually(lambda: _message(impatient, first["id"])["provider_message_id"] is not None)
    impatient.twilio.answer_late(1, 2.0)
    [conversation] = [
        c for c in impatient.conversations() if c["channel_id"] == impatient.twilio_channel["id"]
    ]
    path = f"/conversations/{conversation['id']}/messages"
    second = impatient.api("POST", path, json={"text": "ok"}).json()
    eventually(lambda: _message(impatient, second["id"])["provider_message_id"] is not None)
    sids = [m["sid"] for m in impatient.twilio.sent]
    assert len(sids) == 2
    assert _message(impatient, first["id"])["provider_message_id"] == sids[0]
    assert _message(impatient, second["id"])["provider_message_id"] == sids[1]


def test_a_refused_send_is_tried_again_without_looking(stack: Stack) -> None:
    """A 503 says Twilio did not take the message: the retry sends with no lookup first."""
    stack.twilio.fail_next(1, 503)
    reply = _reply(stack)
    eventually(lambda: _message(stack, reply["id"])["provider_message_id"] is not None)
    assert stack.twilio.requests["messages"] == 2
    assert stack.twilio.requests["list_messages"] == 0
    assert len(stack.twilio.sent) == 1


def _statuses_of(stack: Stack, message_id: str) -> list[tuple[str, str | None]]:
    """The feed's events about one message: each type, with the status it moved to."""
    return [
        (item["type"], item["data"].get("status"))
        for item in stack.feed()
        if item["data"].get("message_id") == message_id
    ]


def test_a_provider_that_never_recovers_dead_letters_then_replays(stack: Stack) -> None:
    """After the last attempt the reply is failed with the error visible, and a dead letter;
    replayed once Twilio is back, it moves back to pending, by the operator, in the feed
    and the history, and is then sent."""
    stack.twilio.fail_always(503)
    reply = _reply(stack)
    eventually(lambda: _message(stack, reply["id"])["status"] == "failed", what="failed")
    message = _message(stack, reply["id"])
    assert "503" in (message["error"]["message"] or "")
    [dead] = [d for d in stack.api("GET", "/dead-letters").json()["items"] if d["kind"] != "event"]
    assert (dead["kind"], dead["target_id"], dead["attempts"]) == ("message.send", reply["id"], 3)
    assert "503" in dead["error"]
    stack.twilio.recover()
    answer = stack.api("POST", "/dead-letters/replay", json={"ids": [dead["id"]]})
    assert answer.json() == {"replayed": 1}
    eventually(lambda: _message(stack, reply["id"])["provider_message_id"] is not None)
    assert len(stack.twilio.sent) == 1
    assert _statuses_of(stack, reply["id"]) == [
        ("message.queued", "pending"),
        ("message.status_changed", "failed"),
        ("message.status_changed", "pending"),
        ("message.sent", "queued"),
    ]
    history = stack.api("GET", "/events?asset=Message&limit=500").json()["items"]
    [requeued] = [
        e
        for e in history
        if e["asset_id"] == reply["id"] and e["details"].get("previous_status") == "failed"
    ]
    assert requeued["type"] == "message.status_changed"
    assert requeued["actor"] == {"name": "Operator", "id": "admin-api"}
    assert requeued["details"]["status"] == "pending"
    assert (requeued["details"]["error_code"], requeued["details"]["error_message"]) == (None, None)


def test_reply_through_cm_and_its_delivery_report(stack: Stack) -> None:
    """A CM.com reply carries the message id as reference; the report moves it to delivered."""
    reply = _reply(stack, via="cm")
    eventually(lambda: bool(stack.cm.sent), what="CM send")
    [sent] = stack.cm.sent
    assert sent["reference"] == reply["id"]
    report = delivery_report(reference=reply["id"], to_number=CUSTOMER, status="delivered")
    assert run(send_report(stack.cm_channel["webhook_url"], report)) == 200
    assert _message(stack, reply["id"])["status"] == "delivered"


def test_cms_refusal_outside_the_window_is_window_closed_with_its_code_kept(
    stack: Stack,
) -> None:
    """CM.com's error 62 (Meta's 131047: more than 24 hours since the customer last
    wrote) is the same ``window_closed`` failure as Twilio's 63016."""
    reply = _reply(stack, via="cm")
    eventually(lambda: bool(stack.cm.sent), what="CM send")
    report = delivery_report(
        reference=reply["id"],
        to_number=CUSTOMER,
        status="failed",
        error_code=62,
        error_description="Message failed to send because more than 24 hours have passed",
    )
    assert run(send_report(stack.cm_channel["webhook_url"], report)) == 200
    error = _message(stack, reply["id"])["error"]
    assert (error["code"], error["provider_code"]) == ("window_closed", "62")


def test_a_cm_rejection_inside_a_200_fails_the_reply(stack: Stack) -> None:
    """CM.com refusing the message in its answer is a failure, not a success."""
    stack.cm.reject_next(1)
    reply = _reply(stack, via="cm")
    eventually(lambda: _message(stack, reply["id"])["status"] == "failed", what="failed")
    assert _message(stack, reply["id"])["error"]["code"] is not None


def test_events_reach_cloudlink_once_across_failures(stack: Stack) -> None:
    """The endpoint fails twice, then accepts: every event arrives, none twice."""
    stack.cloudlink.fail_next(2, 500)
    assert stack.twilio_inbound("hello").status_code == 200
    eventually(
        lambda: "message.received" in {e["type"] for e in stack.cloudlink.received},
        what="delivery",
    )
    assert stack.cloudlink.duplicates == []
    assert stack.cloudlink.rejected == []


def test_410_disables_the_endpoint_until_it_is_enabled_and_replayed(stack: Stack) -> None:
    """410 Gone disables the endpoint and dead-letters its deliveries; enabling it and
    replaying delivers them."""
    # The endpoint's own creation event first, so that the two below are its only rows.
    eventually(lambda: bool(stack.cloudlink.events("endpoint.created")), what="first delivery")
    stack.cloudlink.fail_always(410)
    assert stack.twilio_inbound("hello").status_code == 200
    eventually(
        lambda: stack.api("GET", "/endpoints").json()["items"][0]["status"] == "disabled",
        what="disabled",
    )
    eventually(lambda: len(stack.api("GET", "/dead-letters").json()["items"]) >= 2)
    stack.cloudlink.recover()
    endpoint_id = stack.endpoint["id"]
    assert stack.api("POST", f"/endpoints/{endpoint_id}/enable").json()["status"] == "enabled"
    assert stack.api("POST", "/dead-letters/replay", json={"all": True}).json()["replayed"] >= 2
    eventually(
        lambda: "message.received" in {e["type"] for e in stack.cloudlink.received},
        what="replayed delivery",
    )


def test_scim_user_changes_are_pushed_to_cloudlink_too(stack: Stack) -> None:
    """Every normalized change of the account reaches its endpoints, Entra's users too."""
    keys = stack.api("POST", "/integrations/azure_ad_sync/keys").json()
    created = stack.http.post(
        keys["tenant_url"].removeprefix(stack.url) + "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@contoso.example",
            "emails": [{"type": "work", "value": "ada@contoso.example", "primary": True}],
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
        },
        headers={
            "Authorization": f"Bearer {keys['secret_token']}",
            "Content-Type": "application/scim+json",
        },
    )
    assert created.status_code == 201, created.text
    eventually(
        lambda: "user.created" in {e["type"] for e in stack.cloudlink.received},
        what="user.created at CloudLink",
    )
    [pushed] = stack.cloudlink.events("user.created")
    assert pushed["data"]["userName"] == "ada@contoso.example"
