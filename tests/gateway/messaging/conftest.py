"""A running gateway wired to fake Twilio, CM.com and CloudLink over real loopback HTTP.

The gateway is served by uvicorn on a port of its own, its public URL is that port, and
the fakes call it back there (Twilio's status callbacks), so every hop is real HTTP.
Each test gets an account with Twilio and CM.com configured, a WhatsApp channel of
each, and a CloudLink endpoint whose signatures the fake receiver verifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from gateway.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.fakes.cloudlink import FakeCloudLink
from tests.fakes.cmcom import FakeCM
from tests.fakes.loopback import serve_apps
from tests.fakes.twilio import FakeTwilio, new_sid, sign_twilio
from tests.support import feed
from tests.support.live import free_port, live_server

TWILIO_SID = "AC" + "1f" * 16
TWILIO_TOKEN = "fake-twilio-auth-token-0123456789"
CM_TOKEN = "fake-cm-product-token-0123456789"
BUSINESS = "+14155550100"
CUSTOMER = "+31612345678"
QUEUE = "queue-7"


@dataclass
class Stack:
    """The gateway under test, its fakes, and the account set up on it."""

    url: str
    http: httpx2.Client
    twilio: FakeTwilio
    cm: FakeCM
    cloudlink: FakeCloudLink
    cloudlink_url: str = ""
    twilio_url: str = ""
    cm_url: str = ""
    account_id: str = ""
    twilio_channel: dict[str, Any] = field(default_factory=dict)
    cm_channel: dict[str, Any] = field(default_factory=dict)
    endpoint: dict[str, Any] = field(default_factory=dict)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """Call the admin API of the test's account (``path`` after the account)."""
        return self.http.request(method, f"/api/v1/accounts/{self.account_id}{path}", **kwargs)

    def twilio_inbound(
        self,
        text: str = "Hello",
        *,
        sid: str | None = None,
        sender: str = CUSTOMER,
        token: str | None = None,
        name: str | None = "Ada",
        url: str | None = None,
        extra: dict[str, str] | None = None,
        sign_with: str = TWILIO_TOKEN,
        media: list[tuple[str, str]] | None = None,
    ) -> httpx2.Response:
        """Post a signed inbound WhatsApp message, as Twilio does."""
        params = self.twilio.inbound_params(
            media=media or (),
            account_sid=TWILIO_SID,
            from_="whatsapp:" + sender,
            to="whatsapp:" + BUSINESS,
            body=text,
            message_sid=sid or new_sid("SM"),
            profile_name=name,
            extra=extra,
        )
        target = url or self.twilio_channel["webhook_url"]
        return self.post_twilio(target, params, sign_with=sign_with, token=token)

    def post_twilio(
        self,
        url: str,
        params: dict[str, str],
        *,
        sign_with: str = TWILIO_TOKEN,
        token: str | None = None,
    ) -> httpx2.Response:
        """POST ``params`` to a channel's webhook ``url``, signed as Twilio signs them."""
        headers = {"X-Twilio-Signature": sign_twilio(sign_with, url, params)}
        if token is not None:
            headers["I-Twilio-Idempotency-Token"] = token
        path = url.split("/webhooks/", 1)[1]
        return self.http.post("/webhooks/" + path, data=params, headers=headers)

    def cm_inbound(self, text: str = "Hi", **kwargs: Any) -> httpx2.Response:
        """Post an inbound CM.com WhatsApp message to the CM channel's URL."""
        kwargs.setdefault("from_number", CUSTOMER)
        body = self.cm.inbound(to_number=BUSINESS, text=text, **kwargs)
        path = self.cm_channel["webhook_url"].split("/webhooks/", 1)[1]
        return self.http.post("/webhooks/" + path, json=body)

    def feed(self) -> list[dict[str, Any]]:
        """Every event of the account's feed, in order (all committed so far)."""
        return feed.settled(*feed.of_account(self.api))

    def feed_types(self) -> list[str]:
        """The types of the feed's events, in order."""
        return [item["type"] for item in self.feed()]

    def conversations(self) -> list[dict[str, Any]]:
        """The account's conversations."""
        items: list[dict[str, Any]] = self.api("GET", "/conversations").json()["items"]
        return items

    def message(self, message_id: str) -> dict[str, Any]:
        """One message of the account, as the API shows it."""
        found: dict[str, Any] = self.api("GET", f"/messages/{message_id}").json()
        return found

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """A conversation's messages."""
        found: list[dict[str, Any]] = self.api(
            "GET", f"/conversations/{conversation_id}/messages"
        ).json()["items"]
        return found


def set_up_account(stack: Stack) -> None:
    """An account with Twilio and CM.com, a WhatsApp channel of each, and an endpoint."""
    created = stack.http.post("/api/v1/accounts", json={"name": "Contoso"})
    stack.account_id = created.json()["id"]
    stack.twilio.add_account(TWILIO_SID, TWILIO_TOKEN)
    stack.twilio.add_number(TWILIO_SID, BUSINESS)
    stack.cm.add_product_token(CM_TOKEN, senders=[BUSINESS.lstrip("+"), BUSINESS])
    answer = stack.api(
        "PUT",
        "/integrations/twilio/settings",
        json={"name": "Twilio", "account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
    )
    assert answer.status_code == 200, answer.text
    answer = stack.api(
        "PUT",
        "/integrations/cmcom/settings",
        json={"name": "CM", "cm_account_id": "cm-1", "product_token": CM_TOKEN},
    )
    assert answer.status_code == 200, answer.text
    for provider in ("twilio", "cm"):
        answer = stack.api(
            "POST",
            "/channels",
            json={"provider": provider, "type": "whatsapp", "number": BUSINESS, "queue_id": QUEUE},
        )
        assert answer.status_code == 201, answer.text
        setattr(stack, f"{provider}_channel", answer.json())
    stack.cm.set_report_url(CM_TOKEN, stack.cm_channel["webhook_url"])
    answer = stack.api("POST", "/endpoints", json={"url": stack.cloudlink_url + "/events"})
    assert answer.status_code == 201, answer.text
    stack.endpoint = answer.json()
    stack.cloudlink.set_secret("/events", stack.endpoint["secret"])


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTwilio, FakeCM, FakeCloudLink, dict[str, str]]]:
    """The three fakes, each on a loopback port."""
    twilio, cm, cloudlink = FakeTwilio(), FakeCM(), FakeCloudLink()
    with serve_apps(twilio.app, cm.app, cloudlink.app) as [twilio_url, cm_url, cloudlink_url]:
        yield (
            twilio,
            cm,
            cloudlink,
            {
                "twilio": twilio_url,
                "cm": cm_url,
                "cloudlink": cloudlink_url,
            },
        )


@pytest.fixture
def stack_settings(
    make_settings: Callable[..., Settings],
    fakes: tuple[FakeTwilio, FakeCM, FakeCloudLink, dict[str, str]],
) -> Callable[..., Settings]:
    """Settings of a gateway on ``port`` that calls the fakes and retries quickly."""
    urls = fakes[3]

    def build(port: int, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "public_url": f"http://127.0.0.1:{port}",
            "twilio_api_url": urls["twilio"],
            "twilio_content_url": urls["twilio"],
            "cm_api_url": urls["cm"],
            "allow_private_endpoints": True,
            "outbox_poll_seconds": 0.05,
            "outbox_retry_scale": 0.01,
            "send_max_attempts": 3,
            "event_max_attempts": 3,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@contextmanager
def open_stack(
    stack_settings: Callable[..., Settings],
    fakes: tuple[FakeTwilio, FakeCM, FakeCloudLink, dict[str, str]],
    **overrides: Any,
) -> Iterator[Stack]:
    """A live gateway with the account of ``set_up_account``, its settings overridden."""
    twilio, cm, cloudlink, urls = fakes
    port = free_port()
    with (
        live_server(stack_settings(port, **overrides), port) as url,
        httpx2.Client(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as http,
    ):
        built = Stack(
            url=url,
            http=http,
            twilio=twilio,
            cm=cm,
            cloudlink=cloudlink,
            cloudlink_url=urls["cloudlink"],
            twilio_url=urls["twilio"],
            cm_url=urls["cm"],
        )
        set_up_account(built)
        yield built


@pytest.fixture
def stack(
    stack_settings: Callable[..., Settings],
    fakes: tuple[FakeTwilio, FakeCM, FakeCloudLink, dict[str, str]],
) -> Iterator[Stack]:
    """A live gateway with the account of ``set_up_account``."""
    with open_stack(stack_settings, fakes) as built:
        yield built
