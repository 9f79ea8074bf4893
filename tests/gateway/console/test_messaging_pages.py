"""The console's messaging and endpoint pages on a live gateway wired to the fake
Twilio, CM.com and CloudLink receiver (the messaging suite's stack)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.conftest import run
from tests.gateway.console.conftest import HOSTILE, sign_in
from tests.gateway.messaging.conftest import CUSTOMER, TWILIO_SID, Stack
from tests.support.waiting import eventually


@pytest.fixture
def browser(stack: Stack) -> Iterator[tuple[httpx2.Client, str, str]]:
    """A signed-in console client of the stack's gateway, its CSRF token, and the base
    path of the stack's account."""
    with httpx2.Client(base_url=stack.url, follow_redirects=True, timeout=30) as client:
        csrf = sign_in(client)
        yield client, csrf, f"/admin/accounts/{stack.account_id}"


def test_channels_show_their_webhook_urls_and_the_twilio_numbers(
    stack: Stack, browser: tuple[httpx2.Client, str, str]
) -> None:
    client, csrf, base = browser
    stack.twilio.add_number(TWILIO_SID, "+14155550111")
    page = client.get(base + "/channels")
    assert page.status_code == 200
    assert stack.twilio_channel["webhook_url"] in page.text
    assert stack.cm_channel["webhook_url"] in page.text
    assert '<option value="+14155550111">' in page.text
    added = client.post(
        base + "/channels",
        data={
            "csrf": csrf,
            "provider": "twilio",
            "type": "sms",
            "number": "+14155550111",
            "queue_id": "queue-9",
        },
    )
    assert "Channel added." in added.text
    channels = stack.api("GET", "/channels").json()["items"]
    new = next(c for c in channels if c["number"] == "+14155550111")
    assert new["type"] == "sms"
    assert new["webhook_url"] in added.text
    not_owned = client.post(
        base + "/channels",
        data={
            "csrf": csrf,
            "provider": "twilio",
            "type": "sms",
            "number": "+14155550999",
            "queue_id": "q",
        },
    )
    assert not_owned.status_code == 422
    assert "does not own +14155550999" in not_owned.text
    confirm = client.get(f"{base}/channels/{new['id']}/delete")
    assert "Delete this channel?" in confirm.text
    deleted = client.post(
        f"{base}/channels/{new['id']}/delete", data={"csrf": csrf, "confirm": "yes"}
    )
    assert "Channel deleted." in deleted.text
    assert new["id"] not in {c["id"] for c in stack.api("GET", "/channels").json()["items"]}


def test_provider_settings_are_checked_saved_and_masked(
    stack: Stack, browser: tuple[httpx2.Client, str, str]
) -> None:
    client, csrf, base = browser
    page = client.get(base + "/integrations/twilio/settings")
    assert TWILIO_SID in page.text
    assert "fake-twilio-auth-token" not in page.text
    assert "••••" in page.text
    refused = client.post(
        base + "/integrations/twilio/settings",
        data={
            "csrf": csrf,
            "name": "Twilio",
            "account_sid": TWILIO_SID,
            "auth_token": "wrong-token-1234",
        },
    )
    assert refused.status_code == 422
    assert "nothing was saved" in refused.text
    malformed = client.post(
        base + "/integrations/twilio/settings",
        data={"csrf": csrf, "name": "Twilio", "account_sid": "nope", "auth_token": "x"},
    )
    assert malformed.status_code == 400
    assert "account_sid" in malformed.text
    cm = client.post(
        base + "/integrations/cm/settings",
        data={
            "csrf": csrf,
            "name": "CM 2",
            "cm_account_id": "cm-2",
            "product_token": "fake-cm-product-token-0123456789",
        },
    )
    assert "Settings saved." in cm.text


def test_an_inbound_message_shows_and_an_agents_reply_goes_out(
    stack: Stack, browser: tuple[httpx2.Client, str, str]
) -> None:
    client, csrf, base = browser
    assert stack.twilio_inbound(HOSTILE, name=HOSTILE).status_code == 200
    listing = client.get(base + "/conversations")
    assert CUSTOMER in listing.text
    assert "<script>alert(1)" not in listing.text
    conversation_id = stack.conversations()[0]["id"]
    page = client.get(f"{base}/conversations/{conversation_id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img" in page.text
    assert "<img src=x" not in page.text
    replied = client.post(
        f"{base}/conversations/{conversation_id}/reply",
        data={"csrf": csrf, "text": "Thanks, we are on it", "author": "Grace"},
    )
    assert "Reply queued." in replied.text
    assert "Thanks, we are on it" in replied.text
    eventually(lambda: len(stack.twilio.sent) == 1, what="the reply sent to Twilio")
    sid = stack.twilio.sent[0]["sid"]
    assert run(stack.twilio.send_status(sid, "delivered")) == 200
    eventually(
        lambda: (
            'data-status="delivered"' in client.get(f"{base}/conversations/{conversation_id}").text
        ),
        what="the delivery status shown",
    )
    empty = client.post(f"{base}/conversations/{conversation_id}/reply", data={"csrf": csrf})
    assert empty.status_code == 400


def test_endpoints_show_their_secret_once_and_dead_letters_replay(
    stack: Stack, browser: tuple[httpx2.Client, str, str]
) -> None:
    client, csrf, base = browser
    added = client.post(
        base + "/endpoints", data={"csrf": csrf, "url": stack.cloudlink_url + "/events/second"}
    )
    assert added.status_code == 200
    secret = added.text.split('id="endpoint-secret" readonly value="')[1].split('"')[0]
    assert secret.startswith("whsec_")
    assert secret not in client.get(base + "/endpoints").text
    endpoint_id = next(
        e["id"]
        for e in stack.api("GET", "/endpoints").json()["items"]
        if e["url"].endswith("/second")
    )
    disabled = client.post(f"{base}/endpoints/{endpoint_id}/disable", data={"csrf": csrf})
    assert "Endpoint disabled." in disabled.text
    enabled = client.post(f"{base}/endpoints/{endpoint_id}/enable", data={"csrf": csrf})
    assert "Endpoint enabled." in enabled.text
    confirm = client.post(f"{base}/endpoints/{endpoint_id}/remove", data={"csrf": csrf})
    assert "Remove this endpoint?" in confirm.text
    removed = client.post(
        f"{base}/endpoints/{endpoint_id}/remove", data={"csrf": csrf, "confirm": "yes"}
    )
    assert "Endpoint removed." in removed.text

    stack.cloudlink.fail_always(500)
    assert stack.twilio_inbound("Anyone there?").status_code == 200
    eventually(
        lambda: "No dead letter." not in client.get(base + "/endpoints").text,
        what="a dead letter",
    )
    stack.cloudlink.recover()
    page = client.get(base + "/endpoints")
    letter_ids = [part.split('"')[0] for part in page.text.split('name="dl-')[1:]]
    assert letter_ids
    nothing = client.post(base + "/dead-letters/replay", data={"csrf": csrf})
    assert nothing.status_code == 400
    replayed = client.post(
        base + "/dead-letters/replay",
        data={"csrf": csrf, **{f"dl-{i}": "yes" for i in letter_ids}},
    )
    assert "Dead letters queued again." in replayed.text

    def all_delivered() -> bool:
        # A letter that ran out of attempts after the page was read is replayed too.
        if "No dead letter." not in client.get(base + "/endpoints").text:
            client.post(base + "/dead-letters/replay", data={"csrf": csrf, "all": "yes"})
            return False
        return any(
            e["data"].get("text") == "Anyone there?"
            for e in stack.cloudlink.events("message.received")
        )

    eventually(all_delivered, what="the replayed letters delivered")
