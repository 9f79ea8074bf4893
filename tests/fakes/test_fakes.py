"""The fakes enforce the services' rules: a fake that accepted anything would prove nothing."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.fakes.cloudlink import FakeCloudLink
from tests.fakes.cmcom import FakeCM, delivery_report, mo_message
from tests.fakes.loopback import serve_app
from tests.fakes.twilio import (
    FakeTwilio,
    inbound_message_params,
    sign_twilio,
    sign_twilio_json,
)

SID = "AC" + "1" * 32
TOKEN = "twilio-auth-token"
OWNED = "+31201234567"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def twilio() -> FakeTwilio:
    fake = FakeTwilio()
    fake.add_account(SID, TOKEN)
    fake.add_number(SID, OWNED)
    return fake


def send(client: TestClient, **form: str) -> Any:
    return client.post(MESSAGES, data=form, auth=(SID, TOKEN))


def test_twilio_refuses_missing_or_wrong_credentials(twilio: FakeTwilio) -> None:
    client = TestClient(twilio.app)
    for auth in (None, (SID, "wrong"), ("AC" + "2" * 32, TOKEN)):
        response = client.get(f"/2010-04-01/Accounts/{SID}.json", auth=auth)
        assert response.status_code == 401
        assert response.json()["code"] == 20003
    other = client.get(f"/2010-04-01/Accounts/{'AC' + '3' * 32}.json", auth=(SID, TOKEN))
    assert other.status_code == 404
    assert other.json()["code"] == 20404
    account = client.get(f"/2010-04-01/Accounts/{SID}.json", auth=(SID, TOKEN)).json()
    assert account["sid"] == SID
    assert account["status"] == "active"


def test_twilio_enforces_sender_recipient_and_body_rules(twilio: FakeTwilio) -> None:
    client = TestClient(twilio.app)
    not_owned = send(client, To="+31612345678", From="+31209999999", Body="hi")
    assert (not_owned.status_code, not_owned.json()["code"]) == (400, 21606)
    whatsapp = send(client, To="whatsapp:+31612345678", From="whatsapp:+31209999999", Body="hi")
    assert whatsapp.json()["code"] == 63007
    mixed = send(client, To="whatsapp:+31612345678", From=OWNED, Body="hi")
    assert mixed.json()["code"] == 21910
    bad_to = send(client, To="0612345678", From=OWNED, Body="hi")
    assert bad_to.json()["code"] == 21211
    too_long = send(client, To="+31612345678", From=OWNED, Body="x" * 1601)
    assert too_long.json()["code"] == 21617
    assert twilio.sent == []
    sent = send(client, To="whatsapp:+31612345678", From=f"whatsapp:{OWNED}", Body="hi")
    assert sent.status_code == 201
    assert sent.json()["status"] == "queued"
    assert sent.json()["sid"].startswith("SM")
    assert len(sent.json()["sid"]) == 34
    assert twilio.sent[0]["to"] == "whatsapp:+31612345678"


def test_twilio_rate_limit_then_recovery(twilio: FakeTwilio) -> None:
    client = TestClient(twilio.app)
    twilio.fail_next(1, 429, retry_after="2")
    limited = send(client, To="+31612345678", From=OWNED, Body="hi")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.json()["code"] == 20429
    assert send(client, To="+31612345678", From=OWNED, Body="hi").status_code == 201
    assert twilio.requests["messages"] == 2
    assert len(twilio.sent) == 1


def test_twilio_lists_messages_newest_first_by_addresses_and_day_sent(twilio: FakeTwilio) -> None:
    client = TestClient(twilio.app)
    for body in ("one", "two", "three"):
        assert send(client, To="+31612345678", From=OWNED, Body=body).status_code == 201
    assert send(client, To="+31687654321", From=OWNED, Body="other").status_code == 201
    base = f"/2010-04-01/Accounts/{SID}/Messages.json"
    query = {"To": "+31612345678", "From": OWNED, "PageSize": "2"}
    first = client.get(base, params=query, auth=(SID, TOKEN)).json()
    assert [m["body"] for m in first["messages"]] == ["three", "two"]
    second = client.get(first["next_page_uri"], auth=(SID, TOKEN)).json()
    assert [m["body"] for m in second["messages"]] == ["one"]
    assert second["next_page_uri"] is None
    today = datetime.now(UTC).date().isoformat()
    unsent = client.get(base, params={"DateSent": today}, auth=(SID, TOKEN)).json()
    assert unsent["messages"] == []
    assert client.get(base, auth=("AC" + "0" * 32, TOKEN)).status_code == 401


def test_twilio_numbers_filter_and_webhook_update(twilio: FakeTwilio) -> None:
    client = TestClient(twilio.app)
    twilio.add_number(SID, "+31207654321")
    base = f"/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers"
    listing = client.get(f"{base}.json?PhoneNumber=%2B31201234567", auth=(SID, TOKEN)).json()
    [number] = listing["incoming_phone_numbers"]
    assert number["phone_number"] == OWNED
    assert listing["next_page_uri"] is None
    paged = client.get(f"{base}.json?PageSize=1", auth=(SID, TOKEN)).json()
    assert paged["next_page_uri"] is not None
    bad = client.post(f"{base}/{number['sid']}.json", data={"SmsMethod": "PUT"}, auth=(SID, TOKEN))
    assert bad.status_code == 400
    update = {"SmsUrl": "https://gw.example/twilio", "SmsMethod": "POST"}
    updated = client.post(f"{base}/{number['sid']}.json", data=update, auth=(SID, TOKEN))
    assert updated.status_code == 200
    assert twilio.number(OWNED)["sms_url"] == "https://gw.example/twilio"
    missing = client.post(f"{base}/PN{'0' * 32}.json", data=update, auth=(SID, TOKEN))
    assert missing.json()["code"] == 20404


def test_twilio_signatures_validate_and_count_blank_params() -> None:
    url = "https://gw.example/twilio/inbound?tenant=a"
    params = inbound_message_params(
        account_sid=SID, from_="whatsapp:+31612345678", to=f"whatsapp:{OWNED}", body="hello"
    )
    assert params["MessagingServiceSid"] == ""
    signature = sign_twilio(TOKEN, url, params)
    validator = RequestValidator(TOKEN)
    assert validator.validate(url, params, signature)
    without_blanks = {name: value for name, value in params.items() if value}
    assert not validator.validate(url, without_blanks, signature)
    body = '{"event": "x"}'
    signed_url, json_signature = sign_twilio_json(TOKEN, url, body)
    assert "bodySHA256=" in signed_url
    assert validator.validate(signed_url, body, json_signature)
    assert not validator.validate(signed_url, body + " ", json_signature)


def test_twilio_status_callbacks_are_signed_and_retried_with_the_same_token(
    twilio: FakeTwilio,
) -> None:
    seen: list[tuple[str, dict[str, str], dict[str, str]]] = []

    async def receive(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        seen.append((str(request.url), form, dict(request.headers)))
        return Response(status_code=204)

    receiver = Starlette(routes=[Route("/status", receive, methods=["POST"])])
    with serve_app(receiver) as base:
        client = TestClient(twilio.app)
        form = {
            "To": "+31612345678",
            "From": OWNED,
            "Body": "hi",
            "StatusCallback": base + "/status",
        }
        sid = send(client, **form).json()["sid"]
        assert asyncio.run(twilio.send_status(sid, "undelivered", error_code="30003")) == 204
        assert asyncio.run(twilio.resend_last_status()) == 204
    (url, params, headers), (_, _, again) = seen
    assert RequestValidator(TOKEN).validate(url, params, headers["x-twilio-signature"])
    assert params["MessageStatus"] == "undelivered"
    assert params["ErrorCode"] == "30003"
    assert again["i-twilio-idempotency-token"] == headers["i-twilio-idempotency-token"]


def test_cm_rejects_messages_inside_a_200() -> None:
    cm = FakeCM()
    cm.add_product_token("token-1", senders=["+31201234567"])
    client = TestClient(cm.app)

    def msg(to: str, sender: str = "+31201234567") -> dict[str, Any]:
        return {
            "from": sender,
            "to": [{"number": to}],
            "body": {"type": "auto", "content": "hi"},
            "allowedChannels": ["WhatsApp"],
            "reference": to,
        }

    def post(*msgs: dict[str, Any], token: str = "token-1") -> Any:
        payload = {"messages": {"authentication": {"producttoken": token}, "msg": list(msgs)}}
        return client.post("/v1.0/message", json=payload, headers={"X-CM-PRODUCTTOKEN": token})

    mixed = post(msg("+31612345678"), msg("06-not-a-number"))
    assert mixed.status_code == 200
    assert mixed.json()["errorCode"] == 201
    accepted, rejected = mixed.json()["messages"]
    assert (accepted["status"], accepted["messageErrorCode"]) == ("Accepted", 0)
    assert rejected["status"] == "Rejected"
    assert rejected["messageErrorCode"] != 0
    assert [m["to"] for m in cm.sent] == ["+31612345678"]
    foreign = post(msg("+31612345678", sender="+31999999999"))
    assert (foreign.status_code, foreign.json()["messages"][0]["messageErrorCode"]) == (400, 301)
    unknown = post(msg("+31612345678"), token="nope")
    assert (unknown.status_code, unknown.json()["errorCode"]) == (400, 101)
    cm.reject_next(1)
    assert post(msg("0031612345678"), msg("+31612345678")).json()["errorCode"] == 201
    report = delivery_report(reference="r", to_number="+316", status="delivered")
    assert report["messages"]["msg"]["status"]["code"] == "2"
    assert mo_message(from_number="+316", to_number="+3120", text="hi")["channel"] == "WhatsApp"


def deliver(client: TestClient, msg_id: str, body: bytes, secret: str = SECRET) -> Any:
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body.decode()),
        "content-type": "application/json",
    }
    return client.post("/events", content=body, headers=headers)


def test_cloudlink_verifies_signatures_and_dedups() -> None:
    cloudlink = FakeCloudLink()
    cloudlink.set_secret("/events", SECRET)
    client = TestClient(cloudlink.app)
    body = orjson.dumps({"type": "user.created", "timestamp": "2026-01-01T00:00:00Z", "data": {}})
    forged = deliver(client, "msg_1", body, secret="whsec_" + "A" * 32)
    assert forged.status_code == 401
    assert len(cloudlink.rejected) == 1
    assert deliver(client, "msg_1", body).status_code == 204
    assert deliver(client, "msg_1", body).status_code == 204
    assert [event["id"] for event in cloudlink.events("user.created")] == ["msg_1"]
    assert cloudlink.duplicates == ["msg_1"]
    cloudlink.fail_next(1, 429, retry_after="1")
    limited = deliver(client, "msg_2", body)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    assert cloudlink.events("user.deleted") == []
    with pytest.raises(TimeoutError):
        asyncio.run(cloudlink.wait_for(lambda: len(cloudlink.received) > 1, timeout=0.05))


def test_twilio_fails_a_free_form_whatsapp_message_outside_the_window(
    twilio: FakeTwilio,
) -> None:
    """Accepted (201), then a failed status callback with 63016, unless the customer wrote
    within 24 hours or the message is a template (ContentSid)."""
    customer, ours = "whatsapp:+31612345678", f"whatsapp:{OWNED}"
    callback = "http://127.0.0.1:9/status"  # nothing listens: the fake records it anyway
    with TestClient(twilio.app) as client:
        refused = send(client, To=customer, From=ours, Body="hi", StatusCallback=callback)
        assert refused.status_code == 201
        deadline = time.monotonic() + 5
        while not twilio.callbacks and time.monotonic() < deadline:
            time.sleep(0.02)
        [failure] = twilio.callbacks
        assert failure["params"]["MessageStatus"] == "failed"
        assert failure["params"]["ErrorCode"] == "63016"
        assert failure["params"]["MessageSid"] == refused.json()["sid"]
        approved = twilio.add_template(SID, "hello", "Hello!")
        template = send(client, To=customer, From=ours, ContentSid=approved, Body="x")
        assert template.status_code == 201
        assert template.json()["body"] == "Hello!"
        twilio.inbound_params(account_sid=SID, from_=customer, to=ours, body="hello")
        answered = send(client, To=customer, From=ours, Body="hi", StatusCallback=callback)
        assert answered.status_code == 201
        time.sleep(0.3)
    assert len(twilio.callbacks) == 1


def test_twilio_lists_templates_with_their_approval_page_by_page(twilio: FakeTwilio) -> None:
    """/v1/ContentAndApprovals in Twilio's contents + meta shape; next_page_url is whole."""
    first = twilio.add_template(SID, "order", "Order {{1}}", approval="pending")
    twilio.add_template(SID, "other", "Other")
    with TestClient(twilio.app) as client:
        assert client.get("/v1/ContentAndApprovals").status_code == 401
        page = client.get("/v1/ContentAndApprovals?PageSize=1", auth=(SID, TOKEN)).json()
        [item] = page["contents"]
        assert item["sid"] == first
        assert item["types"]["twilio/text"]["body"] == "Order {{1}}"
        assert item["variables"] == {"1": "example 1"}
        assert item["approval_requests"]["status"] == "pending"
        assert page["meta"]["key"] == "contents"
        following = client.get(page["meta"]["next_page_url"], auth=(SID, TOKEN)).json()
        assert [i["friendly_name"] for i in following["contents"]] == ["other"]
        assert following["meta"]["next_page_url"] is None
        plain = client.get("/v1/Content", auth=(SID, TOKEN)).json()["contents"]
        assert "approval_requests" not in plain[0]


def test_twilio_applies_its_rules_to_template_sends(twilio: FakeTwilio) -> None:
    """An unknown ContentSid is 21655, ContentVariables not an object of strings 21656;
    missing variables fail the message with 63028, and a template not approved outside
    the window with 63016."""
    customer, ours = "whatsapp:+31612345678", f"whatsapp:{OWNED}"
    callback = "http://127.0.0.1:9/status"
    order = twilio.add_template(SID, "order", "Order {{1}} on {{2}}")
    pending = twilio.add_template(SID, "promo", "Sale!", approval="pending")
    with TestClient(twilio.app) as client:
        unknown = send(client, To=customer, From=ours, ContentSid="HX" + "0" * 32)
        assert (unknown.status_code, unknown.json()["code"]) == (400, 21655)
        for bad in ("[1]", '{"1": 5}', "not json"):
            refused = send(client, To=customer, From=ours, ContentSid=order, ContentVariables=bad)
            assert (refused.status_code, refused.json()["code"]) == (400, 21656)
        rendered = send(
            client,
            To=customer,
            From=ours,
            ContentSid=order,
            ContentVariables='{"1": "A-1", "2": "Monday"}',
        )
        assert rendered.json()["body"] == "Order A-1 on Monday"
        short = send(
            client,
            To=customer,
            From=ours,
            ContentSid=order,
            ContentVariables='{"1": "A-1"}',
            StatusCallback=callback,
        )
        assert short.status_code == 201
        unapproved = send(
            client, To=customer, From=ours, ContentSid=pending, StatusCallback=callback
        )
        assert unapproved.status_code == 201
        deadline = time.monotonic() + 5
        while len(twilio.callbacks) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    codes = {c["params"]["MessageSid"]: c["params"]["ErrorCode"] for c in twilio.callbacks}
    assert codes == {short.json()["sid"]: "63028", unapproved.json()["sid"]: "63016"}
