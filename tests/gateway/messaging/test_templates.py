"""WhatsApp templates: listed from Twilio's Content API with their approval, sent as
ContentSid + ContentVariables outside the window, refused before queueing when they do
not fit, and starting a conversation with a contact who never wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage.engine import Database
from tests.gateway.messaging.conftest import BUSINESS, CUSTOMER, TWILIO_SID, Stack
from tests.gateway.messaging.test_window import _age_messages, _at, _conversation
from tests.support.waiting import eventually

STRANGER = "+31687654321"


def _templates(stack: Stack, **params: str) -> list[dict[str, Any]]:
    answer = stack.api("GET", f"/channels/{stack.twilio_channel['id']}/templates", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _add_templates(stack: Stack) -> dict[str, str]:
    twilio = stack.twilio
    return {
        "order": twilio.add_template(
            TWILIO_SID,
            "order_update",
            "Hello {{1}}, your order {{2}} ships today.",
            variables={"1": "Ada", "2": "A-17"},
        ),
        "pending": twilio.add_template(
            TWILIO_SID, "promo", "Sale on {{1}}!", approval="pending", category="MARKETING"
        ),
        "rejected": twilio.add_template(
            TWILIO_SID,
            "callback",
            "We tried to call you.",
            approval="rejected",
            rejection_reason="INVALID_FORMAT",
        ),
    }


def test_the_channels_templates_are_listed_with_their_approval(stack: Stack) -> None:
    """Each with its id, name, language, variables (with their examples), approval and
    body; approved ones first."""
    sids = _add_templates(stack)
    items = _templates(stack)
    assert items[0]["id"] == sids["order"]
    by_id = {item["id"]: item for item in items}
    order = by_id[sids["order"]]
    assert order["name"] == "order_update"
    assert order["language"] == "en"
    assert order["approval"] == "approved"
    assert order["category"] == "UTILITY"
    assert order["body"] == "Hello {{1}}, your order {{2}} ships today."
    assert order["variables"] == [
        {"name": "1", "example": "Ada"},
        {"name": "2", "example": "A-17"},
    ]
    assert by_id[sids["pending"]]["approval"] == "pending"
    assert by_id[sids["rejected"]]["rejection_reason"] == "INVALID_FORMAT"


@pytest.mark.one_backend
def test_the_list_is_kept_briefly_and_read_again_when_asked(stack: Stack) -> None:
    _add_templates(stack)
    _templates(stack)
    _templates(stack)
    assert stack.twilio.requests["content_and_approvals"] == 1
    added = stack.twilio.add_template(TWILIO_SID, "later", "Later {{1}}")
    assert added not in [item["id"] for item in _templates(stack)]
    assert added in [item["id"] for item in _templates(stack, fresh="true")]
    assert stack.twilio.requests["content_and_approvals"] == 2
    assert (
        stack.api(
            "GET", f"/channels/{stack.twilio_channel['id']}/templates?fresh=maybe"
        ).status_code
        == 400
    )


@pytest.mark.one_backend
def test_every_page_of_twilios_list_is_read(stack: Stack) -> None:
    """Twilio pages by meta.next_page_url; 501 templates are two pages of 500."""
    sids = [stack.twilio.add_template(TWILIO_SID, f"t{n:03}", "Hi {{1}}") for n in range(501)]
    assert {item["id"] for item in _templates(stack)} == set(sids)
    assert stack.twilio.requests["content_and_approvals"] == 2


def test_a_template_goes_out_as_content_sid_and_variables_outside_the_window(
    stack: Stack, db: Database
) -> None:
    """No Body; the message keeps the template and its rendered text; WhatsApp delivers it
    although the window closed (an approved template is what may go out then)."""
    sids = _add_templates(stack)
    assert stack.twilio_inbound("question").status_code == 200
    conversation = _conversation(stack)
    _age_messages(db, conversation["id"], 30)
    stack.twilio.customer_wrote(
        "whatsapp:" + CUSTOMER, "whatsapp:" + BUSINESS, at=datetime.now(UTC) - timedelta(hours=30)
    )
    variables = {"1": "Ada", "2": "A-17"}
    reply = stack.api(
        "POST",
        f"/conversations/{conversation['id']}/messages",
        json={"template": {"id": sids["order"], "variables": variables}, "author": "agent-7"},
    )
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["id"]
    eventually(lambda: len(stack.twilio.sent) == 1, what="the send")
    [sent] = stack.twilio.sent
    assert sent["form"]["ContentSid"] == [sids["order"]]
    assert json.loads(sent["form"]["ContentVariables"][0]) == variables
    assert "Body" not in sent["form"]
    eventually(lambda: stack.message(message_id)["status"] == "queued", what="sent")
    message = stack.message(message_id)
    assert message["text"] == "Hello Ada, your order A-17 ships today."
    assert message["template"] == {
        "id": sids["order"],
        "name": "order_update",
        "language": "en",
        "variables": variables,
    }
    [queued] = [e for e in stack.feed() if e["type"] == "message.queued"]
    assert queued["data"]["template"]["id"] == sids["order"]
    assert queued["data"]["text"] == message["text"]
    # No failure follows: the fake posts 63016 only for free-form messages.
    assert all(c["params"].get("ErrorCode") != "63016" for c in stack.twilio.callbacks)


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("which", "variables", "status", "error", "named"),
    [
        ("unknown", {}, 422, "template_unknown", "order_update"),
        ("pending", {"1": "shoes"}, 409, "template_not_approved", "pending"),
        ("rejected", {}, 409, "template_not_approved", "INVALID_FORMAT"),
        ("order", {"1": "Ada"}, 422, "template_variables", "missing 2"),
        ("order", {"1": "Ada", "2": " "}, 422, "template_variables", "empty 2"),
        ("order", {"1": "Ada", "2": "A-17", "3": "x"}, 422, "template_variables", "3"),
    ],
)
def test_a_template_that_does_not_fit_is_refused_and_nothing_is_queued(
    stack: Stack, which: str, variables: dict[str, str], status: int, error: str, named: str
) -> None:
    sids = _add_templates(stack)
    assert stack.twilio_inbound("question").status_code == 200
    conversation = _conversation(stack)
    before = stack.messages(conversation["id"])
    template_id = sids.get(which, "HX" + "0" * 32)
    answer = stack.api(
        "POST",
        f"/conversations/{conversation['id']}/messages",
        json={"template": {"id": template_id, "variables": variables}},
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert named in answer.json()["detail"]
    assert "Nothing was queued" in answer.json()["detail"]
    assert stack.messages(conversation["id"]) == before
    assert "message.queued" not in stack.feed_types()
    assert stack.twilio.sent == []


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "hi", "template": {"id": "HX1"}},
        {"text": None, "template": {"id": "HX1"}},
        {"template": {"id": "HX1", "variables": {"1": 5}}},
        {"template": {"id": "HX1", "extra": 1}},
    ],
)
def test_a_reply_is_text_or_a_template_exactly(stack: Stack, body: dict[str, Any]) -> None:
    assert stack.twilio_inbound("question").status_code == 200
    conversation = _conversation(stack)
    answer = stack.api("POST", f"/conversations/{conversation['id']}/messages", json=body)
    assert answer.status_code == 400, answer.text
    assert stack.twilio.sent == []


def test_a_template_starts_a_conversation_with_a_contact_who_never_wrote(stack: Stack) -> None:
    """The conversation opens with the template; the contact's answer opens the window,
    and free text may follow."""
    sids = _add_templates(stack)
    answer = stack.api(
        "POST",
        "/conversations",
        json={
            "channel_id": stack.twilio_channel["id"],
            "address": STRANGER,
            "template": {"id": sids["order"], "variables": {"1": "Bo", "2": "B-2"}},
            "author": "agent-7",
        },
    )
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["opened"] is True
    conversation_id = started["conversation_id"]
    eventually(lambda: len(stack.twilio.sent) == 1, what="the send")
    assert stack.twilio.sent[0]["to"] == "whatsapp:" + STRANGER
    assert stack.twilio.sent[0]["from"] == "whatsapp:" + BUSINESS
    conversation = stack.api("GET", f"/conversations/{conversation_id}").json()
    assert conversation["address"] == "whatsapp:" + STRANGER
    assert conversation["window_closes_at"] is None
    [opened] = [e for e in stack.feed() if e["type"] == "conversation.opened"]
    assert opened["data"]["started_by"] == "agent-7"
    path = f"/conversations/{conversation_id}/messages"
    assert stack.api("POST", path, json={"text": "Still there?"}).status_code == 409
    assert stack.twilio_inbound("Yes, thanks!", sender=STRANGER).status_code == 200
    after = stack.api("GET", f"/conversations/{conversation_id}").json()
    assert _at(after["window_closes_at"]) > datetime.now(UTC) + timedelta(hours=23)
    assert [m["direction"] for m in stack.messages(conversation_id)] == ["outbound", "inbound"]
    assert stack.api("POST", path, json={"text": "Great"}).status_code == 202


def test_starting_again_uses_the_contacts_open_conversation(stack: Stack) -> None:
    sids = _add_templates(stack)
    assert stack.twilio_inbound("question").status_code == 200
    conversation = _conversation(stack)
    answer = stack.api(
        "POST",
        "/conversations",
        json={
            "channel_id": stack.twilio_channel["id"],
            "address": "whatsapp:" + CUSTOMER,
            "template": {"id": sids["order"], "variables": {"1": "Ada", "2": "A-17"}},
        },
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["conversation_id"] == conversation["id"]
    assert answer.json()["opened"] is False


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"text": "Hello!"}, 409, "window_closed"),
        ({"channel_id": "no-such-channel"}, 404, "not_found"),
        ({"address": "0612345678"}, 400, "invalid_value"),
    ],
)
def test_a_start_that_cannot_go_out_stores_nothing(
    stack: Stack, changes: dict[str, Any], status: int, error: str
) -> None:
    sids = _add_templates(stack)
    body: dict[str, Any] = {
        "channel_id": stack.twilio_channel["id"],
        "address": STRANGER,
        "template": {"id": sids["order"], "variables": {"1": "Bo", "2": "B-2"}},
    }
    if "text" in changes:
        del body["template"]
    body.update(changes)
    answer = stack.api("POST", "/conversations", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert stack.conversations() == []
    assert not [t for t in stack.feed_types() if t.startswith(("conversation.", "message."))]
    assert stack.twilio.sent == []


NAMESPACE = "b1c2d3e4_f5a6_4b7c_8d9e_0f1a2b3c4d5e"
CM_TEMPLATE = {
    "name": "order_update",
    "namespace": NAMESPACE,
    "language": "en",
    "body": "Hello {{1}}, your order {{2}} ships today.",
    "category": "UTILITY",
}


def _register(stack: Stack, items: list[dict[str, Any]], channel: str = "cm") -> Any:
    target = stack.cm_channel if channel == "cm" else stack.twilio_channel
    return stack.api("PUT", f"/channels/{target['id']}/templates", json={"items": items})


def test_a_cm_channels_templates_are_registered_and_listed(stack: Stack) -> None:
    """CM.com's messaging API lists none: the operator registers those its portal shows."""
    answer = _register(stack, [CM_TEMPLATE])
    assert answer.status_code == 200, answer.text
    listed = stack.api("GET", f"/channels/{stack.cm_channel['id']}/templates").json()["items"]
    assert listed == [
        {
            "id": "order_update/en",
            "name": "order_update",
            "language": "en",
            "variables": [{"name": "1", "example": None}, {"name": "2", "example": None}],
            "approval": "approved",
            "category": "UTILITY",
            "body": CM_TEMPLATE["body"],
            "rejection_reason": None,
        }
    ]
    [event] = [e for e in stack.feed() if e["type"] == "channel.templates_set"]
    assert event["data"]["templates"] == ["order_update/en"]
    assert _register(stack, []).status_code == 200
    assert stack.api("GET", f"/channels/{stack.cm_channel['id']}/templates").json()["items"] == []


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("items", "channel", "status"),
    [
        ([CM_TEMPLATE, CM_TEMPLATE], "cm", 422),
        ([{**CM_TEMPLATE, "name": "Order Update"}], "cm", 400),
        ([{**CM_TEMPLATE, "language": "english"}], "cm", 400),
        ([CM_TEMPLATE], "twilio", 409),
    ],
)
def test_a_registration_that_does_not_hold_changes_nothing(
    stack: Stack, items: list[dict[str, Any]], channel: str, status: int
) -> None:
    answer = _register(stack, items, channel)
    assert answer.status_code == status, answer.text
    assert "channel.templates_set" not in stack.feed_types()


def test_a_cm_template_goes_out_in_cms_template_shape(stack: Stack, db: Database) -> None:
    """richContent's WhatsApp template: namespace, element_name, language, and the body's
    parameters in the order of their numbers; the text is the rendered template."""
    stack.cm.add_template(
        "fake-cm-product-token-0123456789",
        namespace=NAMESPACE,
        name="order_update",
        language="en",
        body=CM_TEMPLATE["body"],
    )
    assert _register(stack, [CM_TEMPLATE]).status_code == 200
    assert stack.cm_inbound("question").status_code == 200
    channel = stack.cm_channel["id"]
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel]
    _age_messages(db, conversation["id"], 30)
    reply = stack.api(
        "POST",
        f"/conversations/{conversation['id']}/messages",
        json={"template": {"id": "order_update/en", "variables": {"2": "A-17", "1": "Ada"}}},
    )
    assert reply.status_code == 202, reply.text
    eventually(lambda: bool(stack.cm.sent), what="the CM send")
    [sent] = stack.cm.sent
    template = sent["rich_content"]["conversation"][0]["template"]["whatsapp"]
    assert template["namespace"] == NAMESPACE
    assert template["element_name"] == "order_update"
    assert template["language"] == {"policy": "deterministic", "code": "en"}
    parameters = template["components"][0]["parameters"]
    assert [p["text"] for p in parameters] == ["Ada", "A-17"]
    assert sent["body"] == "Hello Ada, your order A-17 ships today."
    message_id = reply.json()["id"]
    eventually(lambda: stack.message(message_id)["status"] == "accepted", what="accepted")
    assert stack.message(message_id)["template"]["id"] == "order_update/en"


def test_cm_refuses_a_template_it_does_not_hold(stack: Stack) -> None:
    """Registered by mistake (CM.com has no such approved template): the send fails with
    CM.com's code, the gateway having let it through."""
    assert _register(stack, [CM_TEMPLATE]).status_code == 200
    assert stack.cm_inbound("question").status_code == 200
    channel = stack.cm_channel["id"]
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel]
    reply = stack.api(
        "POST",
        f"/conversations/{conversation['id']}/messages",
        json={"template": {"id": "order_update/en", "variables": {"1": "Ada", "2": "A-17"}}},
    )
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["id"]
    eventually(lambda: stack.message(message_id)["status"] == "failed", what="the refusal")
    assert stack.message(message_id)["error"]["provider_code"] == "306"


def test_cm_stays_the_authority_on_the_window(stack: Stack) -> None:
    """A free-form reply CM.com refuses outside the window is reported failed with 62,
    which is the message's window_closed failure."""
    assert stack.cm_inbound("question").status_code == 200
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    stack.cm.customer_wrote(CUSTOMER, BUSINESS, at=long_ago)
    channel = stack.cm_channel["id"]
    [conversation] = [c for c in stack.conversations() if c["channel_id"] == channel]
    reply = stack.api(
        "POST", f"/conversations/{conversation['id']}/messages", json={"text": "Sorry!"}
    )
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["id"]
    eventually(lambda: stack.message(message_id)["status"] == "failed", what="CM's report")
    error = stack.message(message_id)["error"]
    assert (error["code"], error["provider_code"]) == ("window_closed", "62")
