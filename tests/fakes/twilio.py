"""A fake of Twilio's REST API 2010-04-01 and of Twilio's signed webhooks.

The gateway provisions Twilio numbers (points their SmsUrl at itself), sends WhatsApp, SMS and
Messenger messages, and receives Twilio's signed callbacks. A mock would accept whatever the
gateway sends; this fake applies Twilio's rules instead, so the mistakes Twilio would refuse
fail here too: basic auth with the Account SID and Auth Token, senders the account must own,
E.164 recipients, the 1600-character body limit, Twilio's error JSON and codes, 429/5xx with
Retry-After, and callbacks signed with ``X-Twilio-Signature`` that include blank parameters.

Where this fake follows Twilio rather than a simpler reading (callers should know):

* ``From`` and ``MessagingServiceSid`` may both be given, as Twilio allows; without ``From``
  the answer has ``"from": null`` and ``"status": "accepted"`` (Twilio picks the sender later).
* A WhatsApp or Messenger ``From`` the account does not own answers 63007 (Twilio could not
  find a Channel), an SMS one 21606; a ``From``/``To`` pair of different channels, 21910.
* Unknown ``MessagingServiceSid`` is 21701, a malformed one 21705; a bad StatusCallback 21609,
  a bad MediaUrl 21620. Failed/undelivered callbacks always carry ``ErrorCode`` (30008 when
  the test names none), as Twilio's do.
* A raw ``+`` in a query string decodes to a space, as on any server: the ``PhoneNumber``
  filter only matches when the client encodes it as ``%2B``.
* Inbound media messages get an ``MM`` sid, text ones ``SM``, as Twilio assigns them.
* Content templates (``add_template``) are listed by ``/v1/ContentAndApprovals`` and
  ``/v1/Content`` on the same host (Twilio serves them on content.twilio.com), paged with
  ``meta.next_page_url``. A send with ``ContentSid`` needs no ``Body`` (one given is
  ignored), answers with the body rendered from ``ContentVariables``; an unknown SID is
  21655, ``ContentVariables`` that are not a JSON object of strings 21656, and missing
  variables fail the message with 63028 (its callback), as Twilio does once WhatsApp
  refuses it. Outside the window only an approved template is delivered.
* Media (``add_media``) is served at its Media URL only with the account's basic auth
  (Twilio's "HTTP Basic Authentication for media"), answered by a 307 to a CDN URL of
  another origin (the fake's other host name) that needs none and records whether
  credentials came along (``cdn_requests``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx2
import phonenumbers
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.fakes.loopback import Faults

API_VERSION = "2010-04-01"
ACCOUNTS = f"/{API_VERSION}/Accounts"
MAX_BODY_CHARS = 1600
E164 = re.compile(r"\+[1-9]\d{1,14}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-f]{32}")
CHANNELS = ("whatsapp", "messenger")
MESSAGE_STATUSES = frozenset(
    [
        "accepted",
        "scheduled",
        "canceled",
        "queued",
        "sending",
        "sent",
        "failed",
        "delivered",
        "undelivered",
        "receiving",
        "received",
        "read",
        "partially_delivered",
    ]
)
FAILED_STATUSES = frozenset({"failed", "undelivered"})
# Twilio's default opt-out and opt-in keywords (an SMS of the word alone).
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})
# WhatsApp's customer service window and Twilio's error for a free-form message outside it.
WINDOW = timedelta(hours=24)
OUTSIDE_WINDOW = "63016"
OUTSIDE_WINDOW_TEXT = (
    "Failed to send freeform message because you are outside the allowed window. "
    "If you are using WhatsApp, please use a Message Template."
)
NO_CHANNEL = "Twilio could not find a Channel with the specified From address"
PARAMETERS_MISMATCH = "63028"
APPROVAL_STATUSES = frozenset(
    {"approved", "pending", "rejected", "paused", "disabled", "unsubmitted", "received"}
)
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
GSM_SEGMENT, GSM_CONCAT, UCS2_SEGMENT, UCS2_CONCAT = 160, 153, 70, 67


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def twilio_date(moment: datetime | None = None) -> str:
    """Twilio's RFC 2822 dates, e.g. ``Thu, 30 Jul 2015 20:12:31 +0000``."""
    return format_datetime(moment or datetime.now(UTC))


def sign_twilio(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a form POST of ``params`` to ``url``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def sign_twilio_json(auth_token: str, url: str, body: str) -> tuple[str, str]:
    """How Twilio signs a JSON body: ``bodySHA256`` joins the query, the URL alone is signed.

    Returns the URL Twilio requests (with ``bodySHA256=<hex>`` appended) and the signature.
    """
    digest = hashlib.sha256(body.encode()).hexdigest()
    parts = urlsplit(url)
    query = f"{parts.query}&bodySHA256={digest}" if parts.query else f"bodySHA256={digest}"
    signed_url = urlunsplit(parts._replace(query=query))
    return signed_url, str(RequestValidator(auth_token).compute_signature(signed_url, {}))


def _country(number: str) -> str:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number)) or ""
    except phonenumbers.NumberParseException:
        return ""


def _whatsapp_message_type(media: Sequence[tuple[str, str]]) -> str:
    if not media:
        return "text"
    kind = media[0][1].split("/", 1)[0]
    return kind if kind in {"image", "video", "audio"} else "document"


def inbound_message_params(
    *,
    account_sid: str,
    from_: str,
    to: str,
    body: str,
    message_sid: str | None = None,
    profile_name: str | None = None,
    wa_id: str | None = None,
    media: Sequence[tuple[str, str]] = (),
    messaging_service_sid: str = "",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The form Twilio POSTs to a number's SmsUrl for an inbound SMS or WhatsApp message.

    ``media`` is (url, content type) pairs. Blank parameters are kept, as Twilio sends them
    (``MessagingServiceSid`` is blank unless given, the SMS geography fields mostly are):
    they count in the signature, so a receiver that drops them computes a different one.
    ``extra`` adds or overrides parameters.
    """
    sid = message_sid or new_sid("MM" if media else "SM")
    params = {
        "ToCountry": _country(to.removeprefix("whatsapp:")),
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": str(len(media)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": _country(from_.removeprefix("whatsapp:")),
        "To": to,
        "MessagingServiceSid": messaging_service_sid,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    if from_.startswith("whatsapp:"):
        for geographic in ("ToCountry", "ToState", "ToCity", "ToZip"):
            del params[geographic]
        for geographic in ("FromCountry", "FromState", "FromCity", "FromZip"):
            del params[geographic]
        params["WaId"] = wa_id or from_.removeprefix("whatsapp:").lstrip("+")
        params["MessageType"] = _whatsapp_message_type(media)
        params["ReferralNumMedia"] = "0"
        if profile_name is not None:
            params["ProfileName"] = profile_name
    for index, (url, content_type) in enumerate(media):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = content_type
    params.update(extra or {})
    return params


class TwilioError(Exception):
    """An error answered in Twilio's JSON shape."""

    def __init__(
        self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        """The response Twilio gives for this error."""
        body = {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _fault_code(status: int) -> int:
    if status == 429:
        return 20429
    if status >= 500:
        return 20500
    return {401: 20003, 404: 20404}.get(status, 20001)


@dataclass
class Account:
    """A Twilio account: its SID is the basic-auth user, its Auth Token the password."""

    sid: str
    auth_token: str
    friendly_name: str
    date_created: str = field(default_factory=twilio_date)
    messenger_pages: set[str] = field(default_factory=set)


@dataclass
class PhoneNumber:
    """An IncomingPhoneNumber the account owns."""

    sid: str
    account_sid: str
    phone_number: str
    messaging_service_sid: str | None
    friendly_name: str
    sms_url: str = ""
    sms_method: str = "POST"
    date_created: str = field(default_factory=twilio_date)
    date_updated: str = field(default_factory=twilio_date)

    def resource(self) -> dict[str, Any]:
        """The JSON Twilio answers for this number."""
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "friendly_name": self.friendly_name,
            "phone_number": self.phone_number,
            "sms_url": self.sms_url,
            "sms_method": self.sms_method,
            "sms_fallback_url": "",
            "sms_fallback_method": "POST",
            "messaging_service_sid": self.messaging_service_sid,
            "capabilities": {"sms": True, "mms": True, "voice": True, "fax": False},
            "status": "in-use",
            "origin": "twilio",
            "api_version": API_VERSION,
            "date_created": self.date_created,
            "date_updated": self.date_updated,
            "uri": f"{ACCOUNTS}/{self.account_sid}/IncomingPhoneNumbers/{self.sid}.json",
        }


@dataclass
class Content:
    """A Content template of an account, with its WhatsApp approval."""

    sid: str
    account_sid: str
    friendly_name: str
    language: str
    body: str
    variables: dict[str, str]
    approval: str
    category: str
    rejection_reason: str = ""
    date_created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def resource(self, *, approvals: bool) -> dict[str, Any]:
        """The JSON of /v1/Content (and with its approval, of /v1/ContentAndApprovals)."""
        item: dict[str, Any] = {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "friendly_name": self.friendly_name,
            "language": self.language,
            "variables": dict(self.variables),
            "types": {"twilio/text": {"body": self.body}},
            "date_created": self.date_created,
            "date_updated": self.date_created,
        }
        if approvals:
            item["approval_requests"] = {
                "name": self.friendly_name,
                "category": self.category,
                "content_type": "twilio/text",
                "status": self.approval,
                "rejection_reason": self.rejection_reason,
                "allow_category_change": True,
            }
        else:
            item["url"] = f"https://content.twilio.com/v1/Content/{self.sid}"
        return item

    def render(self, values: Mapping[str, str]) -> str:
        """The body as the contact reads it."""
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.body)

    def missing(self, values: Mapping[str, str]) -> list[str]:
        """Placeholders of the body that ``values`` does not fill."""
        return [name for name in PLACEHOLDER.findall(self.body) if not values.get(name)]


def _split_address(address: str) -> tuple[str | None, str]:
    """(channel, bare address): ``whatsapp:+31...`` is ("whatsapp", "+31..."), SMS has None."""
    prefix, colon, rest = address.partition(":")
    return (prefix, rest) if colon else (None, address)


def _valid_recipient(address: str) -> bool:
    channel, bare = _split_address(address)
    if channel == "messenger":
        return bool(bare) and not any(char.isspace() for char in bare)
    return channel in (None, "whatsapp") and E164.fullmatch(bare) is not None


def _absolute_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _segments(body: str) -> int:
    single, concatenated = (
        (GSM_SEGMENT, GSM_CONCAT) if body.isascii() else (UCS2_SEGMENT, UCS2_CONCAT)
    )
    return 1 if len(body) <= single else -(-len(body) // concatenated)


class FakeTwilio:
    """Twilio's accounts, numbers, Messages API and status callbacks, in memory.

    State for tests: ``sent`` (every accepted message, newest last), ``requests`` (a Counter
    keyed "account", "list_numbers", "update_number", "messages"), ``callbacks`` (every status
    callback posted, with the receiver's answer). ``auto_status`` (e.g. ["sent", "delivered"])
    makes every successful send post those callbacks in the background, ``auto_status_delay``
    seconds apart.

    WhatsApp's 24-hour customer service window, as Twilio applies it: a free-form message
    (no ``ContentSid``) to a WhatsApp address that has not written to its sender within 24
    hours is accepted (201), then fails with error 63016 in its status callback. The fake
    knows who wrote from ``inbound_params`` (the form of an inbound message, as Twilio
    posts it) or ``customer_wrote``; ``enforce_window=False`` turns the rule off.

    SMS opt-out, as Twilio's default opt-out management: an SMS of STOP (STOPALL,
    UNSUBSCRIBE, CANCEL, END, QUIT) opts its sender out of the number, START (YES, UNSTOP)
    back in, and the inbound form says so in ``OptOutType``; a send to an opted-out number
    is refused, 400 with error 21610.
    """

    def __init__(
        self,
        *,
        auto_status: Sequence[str] | None = None,
        auto_status_delay: float = 0.05,
        enforce_window: bool = True,
    ) -> None:
        unknown = set(auto_status or ()) - MESSAGE_STATUSES
        if unknown:
            raise ValueError(f"not Twilio message statuses: {sorted(unknown)}")
        self.auto_status = list(auto_status) if auto_status else None
        self.auto_status_delay = auto_status_delay
        self.enforce_window = enforce_window
        # When each customer last wrote to each of our senders: (customer, sender) -> time.
        self.customers: dict[tuple[str, str], datetime] = {}
        # (customer, sender) pairs of customers who texted STOP to that sender.
        self.opted_out: set[tuple[str, str]] = set()
        self.accounts: dict[str, Account] = {}
        self.contents: dict[str, Content] = {}
        # Media by (account sid, message sid, media sid): content type and bytes.
        self.media: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        self._cdn: dict[str, tuple[str, bytes]] = {}
        self.cdn_requests: list[dict[str, Any]] = []
        self.numbers: dict[str, PhoneNumber] = {}
        self.sent: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.callbacks: list[dict[str, Any]] = []
        self._faults = Faults()
        self._last_callback: tuple[str, bytes, dict[str, str]] | None = None
        self._late = (0, 0.0)
        self._recoveries = 0
        self._background: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route(f"{ACCOUNTS}/{{sid}}.json", self._get_account, methods=["GET"]),
                Route(
                    f"{ACCOUNTS}/{{sid}}/IncomingPhoneNumbers.json",
                    self._list_numbers,
                    methods=["GET"],
                ),
                Route(
                    f"{ACCOUNTS}/{{sid}}/IncomingPhoneNumbers/{{number_sid}}.json",
                    self._update_number,
                    methods=["POST"],
                ),
                Route(f"{ACCOUNTS}/{{sid}}/Messages.json", self._create_message, methods=["POST"]),
                Route(f"{ACCOUNTS}/{{sid}}/Messages.json", self._list_messages, methods=["GET"]),
                Route(
                    f"{ACCOUNTS}/{{sid}}/Messages/{{message_sid}}/Media/{{media_sid}}",
                    self._get_media,
                    methods=["GET"],
                ),
                Route("/cdn/{token}", self._cdn_media, methods=["GET"]),
                Route("/v1/ContentAndApprovals", self._list_approvals, methods=["GET"]),
                Route("/v1/Content", self._list_contents, methods=["GET"]),
            ],
            exception_handlers={TwilioError: self._error, HTTPException: self._http_error},
        )

    # Set-up and inspection

    def add_account(self, sid: str, auth_token: str, friendly_name: str = "Test account") -> None:
        """Create an account; ``sid`` and ``auth_token`` are its basic-auth credentials."""
        self.accounts[sid] = Account(sid, auth_token, friendly_name)

    def add_number(
        self, account_sid: str, phone_number: str, *, messaging_service_sid: str | None = None
    ) -> str:
        """Give the account an E.164 number (SMS and WhatsApp sender); returns its PN sid."""
        if account_sid not in self.accounts:
            raise KeyError(f"no account {account_sid}")
        if E164.fullmatch(phone_number) is None:
            raise ValueError(f"{phone_number!r} is not E.164")
        if messaging_service_sid is not None and not MESSAGING_SERVICE_SID.fullmatch(
            messaging_service_sid
        ):
            raise ValueError(f"{messaging_service_sid!r} is not a Messaging Service SID")
        sid = new_sid("PN")
        self.numbers[sid] = PhoneNumber(
            sid, account_sid, phone_number, messaging_service_sid, phone_number
        )
        return sid

    def add_template(
        self,
        account_sid: str,
        name: str,
        body: str,
        *,
        language: str = "en",
        variables: Mapping[str, str] | None = None,
        approval: str = "approved",
        category: str = "UTILITY",
        rejection_reason: str = "",
    ) -> str:
        """Give the account a Content template (``{{1}}`` placeholders in ``body``, their
        examples in ``variables``) with its WhatsApp approval; returns its HX sid."""
        if approval not in APPROVAL_STATUSES:
            raise ValueError(f"{approval!r} is not a Content approval status")
        found = PLACEHOLDER.findall(body)
        examples = dict(variables or {name: f"example {name}" for name in found})
        sid = new_sid("HX")
        self.contents[sid] = Content(
            sid, account_sid, name, language, body, examples, approval, category, rejection_reason
        )
        return sid

    def add_media(
        self, account_sid: str, content: bytes, content_type: str, *, message_sid: str = ""
    ) -> str:
        """A medium of an inbound message of the account: its Media URL's path (prefix the
        fake's base URL), which answers only with the account's credentials."""
        message_sid = message_sid or new_sid("MM")
        media_sid = new_sid("ME")
        self.media[(account_sid, message_sid, media_sid)] = (content_type, content)
        return f"{ACCOUNTS}/{account_sid}/Messages/{message_sid}/Media/{media_sid}"

    def add_messenger_page(self, account_sid: str, page_id: str) -> None:
        """Let the account send as ``messenger:<page_id>``."""
        self.accounts[account_sid].messenger_pages.add(page_id)

    def number(self, phone_number: str) -> dict[str, Any]:
        """The number's current resource (``sms_url``, ``sms_method``, ...)."""
        for number in self.numbers.values():
            if number.phone_number == phone_number:
                return number.resource()
        raise KeyError(phone_number)

    def customer_wrote(self, customer: str, sender: str, at: datetime | None = None) -> None:
        """``customer`` (``whatsapp:+31...``) wrote to ``sender`` at ``at`` (now)."""
        self.customers[(customer, sender)] = at or datetime.now(UTC)

    def inbound_params(self, **kwargs: Any) -> dict[str, str]:
        """``inbound_message_params(**kwargs)``, its customer recorded as having written;
        an SMS keyword opts them out or in, and says so in ``OptOutType``."""
        params = inbound_message_params(**kwargs)
        customer, sender = params["From"], params["To"]
        self.customer_wrote(customer, sender)
        word = params.get("Body", "").strip().upper()
        if not customer.startswith(("whatsapp:", "messenger:")):
            if word in OPT_OUT_WORDS:
                self.opted_out.add((customer, sender))
                params["OptOutType"] = "STOP"
            elif word in OPT_IN_WORDS:
                self.opted_out.discard((customer, sender))
                params["OptOutType"] = "START"
        return params

    def _outside_window(self, to: str, sender: str, content: Content | None) -> bool:
        """A message WhatsApp refuses: free-form (or a template not approved) to a contact
        who has not written within 24 hours."""
        if not self.enforce_window or not to.startswith("whatsapp:"):
            return False
        if content is not None and content.approval == "approved":
            return False
        wrote = self.customers.get((to, sender))
        return wrote is None or datetime.now(UTC) - wrote >= WINDOW

    def message(self, message_sid: str) -> dict[str, Any]:
        """A sent message's record, as kept in ``sent``."""
        for message in self.sent:
            if message["sid"] == message_sid:
                return message
        raise KeyError(message_sid)

    # Fault injection on Messages.json (after authentication, as Twilio's rate limiter is)

    def fail_next(self, count: int, status: int = 429, retry_after: str | None = None) -> None:
        """Answer ``status`` to the next ``count`` sends, with Retry-After when given."""
        self._faults.fail_next(count, status, retry_after)

    def fail_always(self, status: int, retry_after: str | None = None) -> None:
        """Answer ``status`` to every send until ``recover()``."""
        self._faults.fail_always(status, retry_after)

    def recover(self) -> None:
        """Serve sends normally again."""
        self._faults.recover()
        self._late = (0, 0.0)
        self._recoveries += 1

    async def _hold(self, seconds: float) -> None:
        """Wait ``seconds`` before answering, or until ``recover()``."""
        deadline = time.monotonic() + seconds
        recoveries = self._recoveries
        while time.monotonic() < deadline and self._recoveries == recoveries:
            await asyncio.sleep(0.05)

    def answer_late(self, count: int, seconds: float) -> None:
        """Take the next ``count`` sends, but answer each only after ``seconds``: a caller
        whose timeout is shorter never learns that the message went out."""
        self._late = (count, seconds)

    # Status callbacks

    async def send_status(
        self,
        message_sid: str,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> int:
        """POST a signed status callback for the message; returns the receiver's HTTP status."""
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"{status!r} is not a Twilio message status")
        message = self.message(message_sid)
        url = message["status_callback"]
        if not url:
            raise ValueError(f"message {message_sid} was sent without a StatusCallback")
        account = self.accounts[message["account_sid"]]
        params = {
            "AccountSid": account.sid,
            "ApiVersion": API_VERSION,
            "From": message["sender"],
            "To": message["to"],
            "MessageSid": message_sid,
            "SmsSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        channel, bare_to = _split_address(message["to"])
        if channel is not None:
            params.update(
                {
                    "ChannelPrefix": channel,
                    "ChannelToAddress": bare_to,
                    "StructuredMessage": "false",
                }
            )
        if status in FAILED_STATUSES or error_code is not None:
            params["ErrorCode"] = error_code or "30008"
            if error_message is not None or status in FAILED_STATUSES:
                params["ErrorMessage"] = error_message or "Unknown error"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "User-Agent": "TwilioProxy/1.1",
            "X-Home-Region": "us1",
            "X-Twilio-Signature": sign_twilio(account.auth_token, url, params),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        message["status"] = status
        if status in {"sent", "delivered", "read"} and message["date_sent"] is None:
            message["date_sent"] = twilio_date()
        self._last_callback = (url, urlencode(params).encode(), headers)
        return await self._post_callback(url, self._last_callback[1], headers)

    async def resend_last_status(self) -> int:
        """Post the last callback again, byte for byte and with the same idempotency token."""
        if self._last_callback is None:
            raise LookupError("no status callback was sent yet")
        return await self._post_callback(*self._last_callback)

    async def _post_callback(self, url: str, content: bytes, headers: dict[str, str]) -> int:
        record: dict[str, Any] = {
            "url": url,
            "params": dict(parse_qsl(content.decode(), keep_blank_values=True)),
            "headers": headers,
            "status_code": None,
        }
        self.callbacks.append(record)
        async with httpx2.AsyncClient(timeout=10.0) as client:
            response = await client.post(url, content=content, headers=headers)
        record["status_code"] = response.status_code
        return response.status_code

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(work: Coroutine[Any, Any, Any]) -> None:
        await asyncio.sleep(0.05)  # after the answer to the send
        with contextlib.suppress(httpx2.HTTPError):
            await work

    async def _play_statuses(self, message_sid: str) -> None:
        for status in self.auto_status or ():
            await asyncio.sleep(self.auto_status_delay)
            try:
                await self.send_status(message_sid, status)
            except httpx2.HTTPError:
                return  # the receiver is down; Twilio would retry, the demo just stops

    # The API

    async def _error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TwilioError)
        return exc.response()

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return TwilioError(405, 20004, "Method not allowed").response()
        message = f"The requested resource {request.url.path} was not found"
        return TwilioError(404, 20404, message).response()

    def _authenticate(self, request: Request) -> Account:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, _, password = decoded.partition(":")
        account = self.accounts.get(user)
        if (
            scheme.lower() != "basic"
            or account is None
            or not secrets.compare_digest(account.auth_token.encode(), password.encode())
        ):
            raise TwilioError(
                401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        return account

    def _account_for(self, request: Request) -> Account:
        account = self._authenticate(request)
        if request.path_params["sid"] != account.sid:
            raise TwilioError(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return account

    async def _get_account(self, request: Request) -> Response:
        self.requests["account"] += 1
        account = self._account_for(request)
        return JSONResponse(
            {
                "sid": account.sid,
                "owner_account_sid": account.sid,
                "friendly_name": account.friendly_name,
                "status": "active",
                "type": "Full",
                "date_created": account.date_created,
                "date_updated": account.date_created,
                "uri": f"{ACCOUNTS}/{account.sid}.json",
            }
        )

    async def _list_numbers(self, request: Request) -> Response:
        self.requests["list_numbers"] += 1
        account = self._account_for(request)
        query = request.query_params
        page_size, page = _paging(query)
        wanted = query.get("PhoneNumber")
        matches = [
            number
            for number in self.numbers.values()
            if number.account_sid == account.sid
            and (wanted is None or number.phone_number == wanted)
        ]
        shown = {} if wanted is None else {"PhoneNumber": wanted}
        resources = [number.resource() for number in matches]
        return _list_page(
            "incoming_phone_numbers", resources, page, page_size, request.url.path, shown
        )

    async def _update_number(self, request: Request) -> Response:
        self.requests["update_number"] += 1
        account = self._account_for(request)
        number = self.numbers.get(request.path_params["number_sid"])
        if number is None or number.account_sid != account.sid:
            raise TwilioError(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        form = await _form(request)
        sms_url = _first(form, "SmsUrl")
        sms_method = _first(form, "SmsMethod")
        if sms_url and not _absolute_http_url(sms_url):
            raise TwilioError(400, 21502, f"SmsUrl is not a valid URL: {sms_url}")
        if sms_method is not None and sms_method.upper() not in ("GET", "POST"):
            raise TwilioError(400, 21218, "SmsMethod must be either GET or POST")
        if sms_url is not None:
            number.sms_url = sms_url
        if sms_method is not None:
            number.sms_method = sms_method.upper()
        friendly_name = _first(form, "FriendlyName")
        if friendly_name is not None:
            number.friendly_name = friendly_name
        number.date_updated = twilio_date()
        return JSONResponse(number.resource())

    async def _create_message(self, request: Request) -> Response:
        self.requests["messages"] += 1
        account = self._account_for(request)
        fault = self._faults.take()
        if fault is not None:
            message = "Too Many Requests" if fault.status == 429 else "Service unavailable"
            raise TwilioError(fault.status, _fault_code(fault.status), message, fault.headers())
        form = await _form(request)
        to = _first(form, "To") or ""
        content, values = self._content_of(account, form)
        body = content.render(values) if content is not None else _first(form, "Body") or ""
        media_urls = form.get("MediaUrl", [])
        status_callback = _first(form, "StatusCallback") or None
        from_ = _first(form, "From") or None
        service_sid = _first(form, "MessagingServiceSid") or None
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if from_ is None and service_sid is None:
            raise TwilioError(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if not body and not media_urls:
            raise TwilioError(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            raise TwilioError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if not _valid_recipient(to):
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if status_callback is not None and not _absolute_http_url(status_callback):
            raise TwilioError(400, 21609, "Invalid StatusCallback url")
        if not all(_absolute_http_url(url) for url in media_urls):
            raise TwilioError(400, 21620, "Invalid media URL(s)")
        sender = self._sender(account, to, from_, service_sid)
        if (to, sender) in self.opted_out:
            raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = new_sid("SM")
        now = twilio_date()
        record: dict[str, Any] = {
            "sid": sid,
            "account_sid": account.sid,
            "to": to,
            "from": from_,
            "sender": sender,
            "messaging_service_sid": service_sid,
            "body": body,
            "media_urls": list(media_urls),
            "status_callback": status_callback,
            "status": "queued" if from_ is not None else "accepted",
            "date_created": now,
            "date_sent": None,
            "form": form,
        }
        record["content_sid"] = content.sid if content is not None else None
        record["content_variables"] = values
        self.sent.append(record)
        if status_callback is not None and self._outside_window(to, sender, content):
            self._in_background(
                self.send_status(
                    sid, "failed", error_code=OUTSIDE_WINDOW, error_message=OUTSIDE_WINDOW_TEXT
                )
            )
        elif status_callback is not None and content is not None and content.missing(values):
            self._in_background(
                self.send_status(
                    sid,
                    "failed",
                    error_code=PARAMETERS_MISMATCH,
                    error_message="Number of parameters provided does not match the expected "
                    "number of parameters",
                )
            )
        elif self.auto_status and status_callback is not None:
            self._in_background(self._play_statuses(sid))
        late, delay = self._late
        if late > 0:
            self._late = (late - 1, delay)
            await self._hold(delay)
        return JSONResponse(_message_resource(record), status_code=201)

    async def _list_messages(self, request: Request) -> Response:
        """Read multiple messages: ``To``, ``From`` and ``DateSent`` (a day, or ``DateSent<``
        and ``DateSent>`` for before and after it) narrow the list, newest first; a message
        not yet sent has no ``date_sent`` and matches no date filter, as on Twilio."""
        self.requests["list_messages"] += 1
        account = self._account_for(request)
        query = request.query_params
        page_size, page = _paging(query)
        filters = {name: query[name] for name in ("To", "From") if name in query}
        days = {op: query[f"DateSent{op}"] for op in ("", "<", ">") if f"DateSent{op}" in query}

        def sent_day(record: dict[str, Any]) -> str | None:
            sent = record["date_sent"]
            return None if sent is None else parsedate_to_datetime(sent).date().isoformat()

        def matches(record: dict[str, Any]) -> bool:
            if record["account_sid"] != account.sid:
                return False
            if "To" in filters and record["to"] != filters["To"]:
                return False
            if "From" in filters and record["sender"] != filters["From"]:
                return False
            day = sent_day(record)
            for op, wanted in days.items():
                if (
                    day is None
                    or not {"": day == wanted, "<": day <= wanted, ">": day >= wanted}[op]
                ):
                    return False
            return True

        found = [_message_resource(r) for r in reversed(self.sent) if matches(r)]
        shown = {**filters, **{f"DateSent{op}": day for op, day in days.items()}}
        return _list_page("messages", found, page, page_size, request.url.path, shown)

    async def _get_media(self, request: Request) -> Response:
        self.requests["media"] += 1
        account = self._account_for(request)
        key = (account.sid, request.path_params["message_sid"], request.path_params["media_sid"])
        found = self.media.get(key)
        if found is None:
            raise TwilioError(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        token = secrets.token_urlsafe(16)
        self._cdn[token] = found
        # Another origin, as Twilio's CDN is (the same server under its other name).
        host = "localhost" if request.url.hostname == "127.0.0.1" else "127.0.0.1"
        cdn = f"{request.url.scheme}://{host}:{request.url.port}/cdn/{token}"
        return Response(status_code=307, headers={"Location": cdn})

    async def _cdn_media(self, request: Request) -> Response:
        self.cdn_requests.append(
            {"path": request.url.path, "authorization": request.headers.get("authorization")}
        )
        found = self._cdn.get(request.path_params["token"])
        if found is None:
            return Response(status_code=404)
        content_type, content = found
        return Response(content, media_type=content_type)

    def _content_of(
        self, account: Account, form: Mapping[str, list[str]]
    ) -> tuple[Content | None, dict[str, str]]:
        """The template a send names (``ContentSid``) and its ``ContentVariables``."""
        sid = _first(form, "ContentSid")
        if not sid:
            return None, {}
        content = self.contents.get(sid)
        if content is None or content.account_sid != account.sid:
            raise TwilioError(400, 21655, f"The ContentSid is Invalid: {sid}")
        raw = _first(form, "ContentVariables") or "{}"
        try:
            values = json.loads(raw)
        except ValueError:
            values = None
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise TwilioError(400, 21656, "The ContentVariables Parameter is invalid")
        return content, values

    async def _list_approvals(self, request: Request) -> Response:
        self.requests["content_and_approvals"] += 1
        return self._content_page(request, approvals=True)

    async def _list_contents(self, request: Request) -> Response:
        self.requests["content"] += 1
        return self._content_page(request, approvals=False)

    def _content_page(self, request: Request, *, approvals: bool) -> Response:
        """One page of the account's templates, in Twilio's ``contents`` + ``meta`` shape."""
        account = self._authenticate(request)
        page_size, page = _paging(request.query_params)
        mine = [c for c in self.contents.values() if c.account_sid == account.sid]
        items = mine[page * page_size : (page + 1) * page_size]
        base = f"{request.base_url}{request.url.path.lstrip('/')}"

        def page_url(index: int) -> str:
            return f"{base}?{urlencode({'PageSize': page_size, 'Page': index})}"

        has_next = (page + 1) * page_size < len(mine)
        return JSONResponse(
            {
                "contents": [c.resource(approvals=approvals) for c in items],
                "meta": {
                    "page": page,
                    "page_size": page_size,
                    "first_page_url": page_url(0),
                    "previous_page_url": page_url(page - 1) if page > 0 else None,
                    "url": page_url(page),
                    "next_page_url": page_url(page + 1) if has_next else None,
                    "key": "contents",
                },
            }
        )

    def _sender(self, account: Account, to: str, from_: str | None, service_sid: str | None) -> str:
        """The address the message goes out from, enforcing that the account owns it."""
        channel, _ = _split_address(to)
        owned = [n for n in self.numbers.values() if n.account_sid == account.sid]
        if service_sid is not None:
            if not MESSAGING_SERVICE_SID.fullmatch(service_sid):
                raise TwilioError(400, 21705, "The Messaging Service is invalid")
            owned = [n for n in owned if n.messaging_service_sid == service_sid]
            if not owned:
                raise TwilioError(400, 21701, "The Messaging Service does not exist")
        if from_ is None:
            if channel == "messenger":
                if not account.messenger_pages:
                    raise TwilioError(400, 63007, NO_CHANNEL)
                return f"messenger:{sorted(account.messenger_pages)[0]}"
            first = owned[0].phone_number
            return first if channel is None else f"{channel}:{first}"
        from_channel, bare_from = _split_address(from_)
        if from_channel != channel:
            raise TwilioError(
                400, 21910, "Invalid From and To pair. From and To should be of the same channel"
            )
        if channel is None:
            if bare_from not in {n.phone_number for n in owned}:
                raise TwilioError(
                    400,
                    21606,
                    f"The From phone number {from_} is not a valid, SMS-capable inbound phone "
                    "number or short code for your account.",
                )
            return from_
        senders = (
            account.messenger_pages if channel == "messenger" else {n.phone_number for n in owned}
        )
        if bare_from not in senders:
            raise TwilioError(400, 63007, NO_CHANNEL)
        return from_


def _list_page(
    key: str,
    everything: list[dict[str, Any]],
    page: int,
    page_size: int,
    path: str,
    filters: Mapping[str, str],
) -> JSONResponse:
    """One page of a Twilio list, under ``key``, with its paging fields and URIs (the
    filters kept in them; next and previous pages carry a ``PageToken``, as Twilio's do)."""
    start = page * page_size
    items = everything[start : start + page_size]

    def page_uri(index: int, *, token: bool = False) -> str:
        params = {**filters, "PageSize": str(page_size), "Page": str(index)}
        if token:
            params["PageToken"] = f"PA{new_sid('')}"
        return f"{path}?{urlencode(params)}"

    return JSONResponse(
        {
            key: items,
            "page": page,
            "page_size": page_size,
            "start": start,
            "end": start + max(len(items) - 1, 0),
            "uri": page_uri(page),
            "first_page_uri": page_uri(0),
            "next_page_uri": (
                page_uri(page + 1, token=True) if start + page_size < len(everything) else None
            ),
            "previous_page_uri": page_uri(page - 1, token=True) if page > 0 else None,
        }
    )


def _paging(query: Mapping[str, str]) -> tuple[int, int]:
    """``PageSize`` (1 to 1000, 50 when absent) and ``Page`` of a list request."""
    try:
        page_size = int(query.get("PageSize", "50"))
        page = int(query.get("Page", "0"))
    except ValueError:
        raise TwilioError(400, 20001, "Invalid paging parameters") from None
    if not 1 <= page_size <= 1000 or page < 0:
        raise TwilioError(400, 20001, "PageSize must be 1 to 1000 and Page at least 0")
    return page_size, page


def _message_resource(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON Twilio answers for one message, as created or as listed."""
    uri = f"{ACCOUNTS}/{record['account_sid']}/Messages/{record['sid']}"
    return {
        "sid": record["sid"],
        "account_sid": record["account_sid"],
        "api_version": API_VERSION,
        "to": record["to"],
        "from": record["sender"] if record["from"] is None else record["from"],
        "messaging_service_sid": record["messaging_service_sid"],
        "body": record["body"],
        "status": record["status"],
        "direction": "outbound-api",
        "num_media": str(len(record["media_urls"])),
        "num_segments": str(_segments(record["body"])),
        "price": None,
        "price_unit": "USD",
        "date_created": record["date_created"],
        "date_updated": record["date_created"],
        "date_sent": record["date_sent"],
        "error_code": None,
        "error_message": None,
        "uri": f"{uri}.json",
        "subresource_uris": {"media": f"{uri}/Media.json"},
    }


async def _form(request: Request) -> dict[str, list[str]]:
    """The form-encoded body, every value kept (blank ones and repeated MediaUrl too)."""
    form: dict[str, list[str]] = {}
    for name, value in parse_qsl((await request.body()).decode(), keep_blank_values=True):
        form.setdefault(name, []).append(value)
    return form


def _first(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None
