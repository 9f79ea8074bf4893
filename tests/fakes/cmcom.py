"""A fake of CM.com's Business Messaging API (JSON gateway) and of its webhooks.

The gateway sends WhatsApp, SMS and Messenger messages through ``POST /v1.0/message`` and
receives CM's inbound (MO) messages and status reports. CM's JSON gateway has a trap a mock
would hide: it judges every message on its own, so a request can succeed at HTTP level while
some of its messages were rejected. This fake keeps that behaviour, as CM documents it at
developers.cm.com (Responses & Errors - JSON; Incoming Status Reports):

* A request without a known product token (``X-CM-PRODUCTTOKEN`` header, or
  ``messages.authentication.producttoken`` in the body) is HTTP **400** with errorCode 101,
  ``"No account found for the given authentication"``: CM does not answer 401, so classify
  by ``errorCode``, not by HTTP status.
* Each recipient of each ``msg`` gets its own entry in ``messages``. When some are rejected
  the answer is HTTP 200 with top-level errorCode 201; when none was accepted it is HTTP 400
  with errorCode 201 and ``"Created 0 message(s)"``; all accepted is 200 with errorCode 0.
* Body that is not the documented JSON: HTTP 400, errorCode 202 (malformed) or 203 (no
  ``msg`` array).

The per-message codes are CM's JSON POST error codes as far as the docs show them; the ones
marked "assumed" were not confirmed: 301 invalid or unknown ``from`` (this fake rejects a
sender not registered for the token, as for WhatsApp), 302 no ``to`` (assumed), 303 ``to`` not
a number (``"Gsm 'x' is not a number."``), 304 empty body, 305 unknown channel (assumed), and
403 for ``reject_next`` (assumed: "Message has been rejected"). Injected 429/5xx faults answer
``{"details": ..., "errorCode": 999, "messages": []}`` (shape assumed).

WhatsApp's rules, as CM.com applies them once Meta answers (codes marked assumed where the
docs do not give them):

* Templates (``add_template``): a ``richContent`` template whose namespace, name and
  language are not the account's approved template is rejected, 306 (assumed); one whose
  body parameters are not exactly as many as the template's variables, 307 (assumed: CM
  says "the template message must have the exact same number of variables").
* The 24-hour window: a free-form WhatsApp message to a number that has not written to
  the sender within 24 hours (``customer_wrote``, or ``inbound``) is accepted, then
  reported failed with errorCode 62 to the token's report URL (``set_report_url``); with
  no report URL the rule is not applied.

Media (``add_media``): a link that answers without credentials until it expires, then
404, as CM.com's media links do.

Status reports (``delivery_report``) follow CM's documented JSON shape, in which ``msg`` is
one object, not a list (``as_list=True`` builds the list form for a tolerant parser). CM's
template quotes every value, so values are strings. Status codes, by name:
accepted=0, rejected=1, delivered=2, failed=3, read=4 (read: not for SMS).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import Faults

CM_NUMBER = re.compile(r"(\+|00)?[1-9]\d{5,14}")
CHANNELS = frozenset(
    {
        "SMS",
        "WhatsApp",
        "Push",
        "RCS",
        "Viber",
        "Facebook Messenger",
        "Instagram",
        "Telegram",
        "Apple Messages for Business",
        "Google Business Messages",
        "Line",
        "Twitter",
    }
)
STATUS_CODES = {"accepted": 0, "rejected": 1, "delivered": 2, "failed": 3, "read": 4}
NO_ACCOUNT = "No account found for the given authentication"
WINDOW = timedelta(hours=24)
OUTSIDE_WINDOW = 62
PLACEHOLDER = re.compile(r"\{\{\s*([0-9]+)\s*\}\}")


@dataclass(frozen=True)
class CmTemplate:
    """An approved (or not) WhatsApp template of an account."""

    namespace: str
    name: str
    language: str
    body: str
    status: str = "approved"

    @property
    def variables(self) -> int:
        """How many ``{{n}}`` it has."""
        return len(set(PLACEHOLDER.findall(self.body)))


def _bare(number: str) -> str:
    """A number as CM.com compares them (``+31...``, ``0031...`` and ``31...`` alike)."""
    return number.removeprefix("+").removeprefix("00")


def cm_time(moment: datetime | None = None) -> str:
    """CM's UTC timestamps, e.g. ``2026-11-29T17:00:00``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def mo_message(
    *,
    from_number: str,
    to_number: str,
    text: str,
    name: str | None = None,
    channel: str = "WhatsApp",
    media: Mapping[str, str] | None = None,
    time_utc: str | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """The JSON CM POSTs to the inbound webhook for a message a user sent (MO).

    ``media`` is ``{"mediaUri", "contentType", "title"}``; ``reference`` is CM's id for the
    message (random when not given), ``time_utc`` defaults to now.
    """
    message: dict[str, Any] = {"text": text, "custom": {}}
    if media is not None:
        message["media"] = dict(media)
    sender: dict[str, str] = {"number": from_number}
    if name is not None:
        sender["name"] = name
    return {
        "reference": reference or secrets.token_hex(16),
        "messageContext": "",
        "from": sender,
        "to": {"number": to_number},
        "message": message,
        "groupings": [],
        "timeUtc": time_utc or cm_time(),
        "channel": channel,
    }


def delivery_report(
    *,
    reference: str,
    to_number: str,
    status: str,
    error_code: int | None = None,
    error_description: str | None = None,
    operator: str = "",
    as_list: bool = False,
) -> dict[str, Any]:
    """A status report in CM's JSON format; ``status`` is a name (see the module docstring)."""
    if status not in STATUS_CODES:
        raise ValueError(f"status must be one of {sorted(STATUS_CODES)}")
    entry = {
        "received": cm_time(),
        "to": to_number,
        "reference": reference,
        "status": {
            "code": str(STATUS_CODES[status]),
            "errorCode": "" if error_code is None else str(error_code),
            "errorDescription": error_description or "",
        },
        "operator": operator,
    }
    return {"messages": {"msg": [entry] if as_list else entry}}


async def send_report(url: str, report: Mapping[str, Any]) -> int:
    """POST a status report (or an MO message) as CM does; returns the receiver's status."""
    async with httpx2.AsyncClient(timeout=10.0) as client:
        response = await client.post(
            url, content=orjson.dumps(report), headers={"Content-Type": "application/json"}
        )
    return response.status_code


def _answer(
    status: int, error_code: int, details: str, messages: list[dict[str, Any]] | None = None
) -> JSONResponse:
    body = {"details": details, "errorCode": error_code, "messages": messages or []}
    return JSONResponse(body, status_code=status)


def _parts(text: str, channels: list[str]) -> int:
    if channels and "SMS" not in channels:
        return 1
    single, concatenated = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // concatenated)


class FakeCM:
    """CM.com's JSON message gateway, in memory.

    State for tests: ``sent`` (accepted messages, one per recipient: ``to``, ``from``,
    ``body``, ``channels``, ``reference``, ``rich_content``, ``token``, ``msg``),
    ``rejected`` (the same plus ``code`` and ``details``) and ``requests`` (a count).
    """

    def __init__(self) -> None:
        self.senders: dict[str, set[str]] = {}
        self.templates: dict[str, list[CmTemplate]] = {}
        self.report_urls: dict[str, str] = {}
        # When each customer last wrote to each sender: (customer, sender), bare numbers.
        self.customers: dict[tuple[str, str], datetime] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.sent: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.requests = 0
        self._faults = Faults()
        self._lock = threading.Lock()
        self._reject_remaining = 0
        self.media: dict[str, tuple[str, bytes, float]] = {}
        self.app = Starlette(
            routes=[
                Route("/v1.0/message", self._send, methods=["POST"]),
                Route("/media/{token}", self._media, methods=["GET"]),
            ]
        )

    def add_media(self, content: bytes, content_type: str, *, seconds: float = 3600) -> str:
        """A medium's link path (prefix the fake's base URL), good for ``seconds``."""
        token = secrets.token_urlsafe(16)
        self.media[token] = (content_type, content, time.monotonic() + seconds)
        return f"/media/{token}"

    def expire_media(self) -> None:
        """Every media link expires now."""
        self.media = {k: (t, c, 0.0) for k, (t, c, _) in self.media.items()}

    async def _media(self, request: Request) -> Response:
        found = self.media.get(request.path_params["token"])
        if found is None or found[2] <= time.monotonic():
            return Response(status_code=404)
        return Response(found[1], media_type=found[0])

    def add_product_token(self, token: str, *, senders: list[str]) -> None:
        """Register a product token and the ``from`` values it may send as."""
        self.senders[token] = set(senders)

    def add_template(
        self,
        token: str,
        *,
        namespace: str,
        name: str,
        language: str,
        body: str,
        status: str = "approved",
    ) -> None:
        """Give the account a WhatsApp template (``{{1}}``... in ``body``)."""
        self.templates.setdefault(token, []).append(
            CmTemplate(namespace, name, language, body, status)
        )

    def set_report_url(self, token: str, url: str) -> None:
        """Where the account's status reports go (CM.com's portal setting)."""
        self.report_urls[token] = url

    def customer_wrote(self, customer: str, sender: str, at: datetime | None = None) -> None:
        """``customer`` wrote to ``sender`` at ``at`` (now)."""
        self.customers[(_bare(customer), _bare(sender))] = at or datetime.now(UTC)

    def inbound(self, **kwargs: Any) -> dict[str, Any]:
        """``mo_message(**kwargs)``, its customer recorded as having written."""
        message = mo_message(**kwargs)
        self.customer_wrote(message["from"]["number"], message["to"]["number"])
        return message

    def fail_next(self, count: int, status: int = 503, retry_after: str | None = None) -> None:
        """Answer ``status`` to the next ``count`` requests, with Retry-After when given."""
        self._faults.fail_next(count, status, retry_after)

    def fail_always(self, status: int, retry_after: str | None = None) -> None:
        """Answer ``status`` to every request until ``recover()``."""
        self._faults.fail_always(status, retry_after)

    def recover(self) -> None:
        """Serve normally again (``reject_next`` included)."""
        self._faults.recover()
        with self._lock:
            self._reject_remaining = 0

    def reject_next(self, count: int) -> None:
        """Reject the next ``count`` otherwise valid messages inside a normal answer."""
        with self._lock:
            self._reject_remaining = count

    def _take_rejection(self) -> bool:
        with self._lock:
            if self._reject_remaining > 0:
                self._reject_remaining -= 1
                return True
            return False

    async def _send(self, request: Request) -> Response:
        self.requests += 1
        fault = self._faults.take()
        if fault is not None:
            response = _answer(fault.status, 999, "Service unavailable, try again later")
            response.headers.update(fault.headers())
            return response
        try:
            payload: Any = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            payload = None
        messages = payload.get("messages") if isinstance(payload, dict) else None
        token = request.headers.get("x-cm-producttoken")
        if not token and isinstance(messages, dict):
            authentication = messages.get("authentication")
            if isinstance(authentication, dict):
                token = authentication.get("producttoken")
        if not isinstance(token, str) or token not in self.senders:
            return _answer(400, 101, NO_ACCOUNT)
        if not isinstance(messages, dict):
            return _answer(400, 202, "The request is malformed: expected a messages object")
        msgs = messages.get("msg")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            return _answer(400, 203, "A messages node requires a msg array with at least one msg")
        entries = [entry for msg in msgs for entry in self._judge(token, msg)]
        accepted = sum(entry["status"] == "Accepted" for entry in entries)
        details = f"Created {accepted} message(s)"
        if accepted == len(entries):
            return _answer(200, 0, details, entries)
        return _answer(200 if accepted else 400, 201, details, entries)

    def _judge(self, token: str, msg: dict[str, Any]) -> list[dict[str, Any]]:
        """One response entry per recipient, recording each as sent or rejected."""
        recipients = msg.get("to")
        numbers = (
            [r.get("number") for r in recipients if isinstance(r, dict)]
            if isinstance(recipients, list)
            else []
        )
        sender = msg.get("from")
        body = msg.get("body")
        text = body.get("content") if isinstance(body, dict) else None
        channels = msg.get("allowedChannels") or []
        reference = msg.get("reference")
        rich_content = msg.get("richContent")
        message_fault = self._message_fault(token, sender, text, channels, rich_content)
        if not numbers:
            numbers, message_fault = [None], message_fault or (302, "No phone numbers found.")
        entries = []
        for number in numbers:
            fault = message_fault
            if fault is None and not (isinstance(number, str) and CM_NUMBER.fullmatch(number)):
                fault = (303, f"Gsm '{number if number is not None else ''}' is not a number.")
            if fault is None and self._take_rejection():
                fault = (403, "Message has been rejected")
            record = {
                "to": number,
                "from": sender,
                "body": text,
                "channels": channels,
                "reference": reference,
                "rich_content": rich_content,
                "token": token,
                "msg": msg,
            }
            if fault is None:
                self.sent.append(record)
                parts = _parts(text or "", channels)
                self._apply_window(token, record)
            else:
                self.rejected.append({**record, "code": fault[0], "details": fault[1]})
                parts = 0
            entries.append(
                {
                    "to": number,
                    "status": "Accepted" if fault is None else "Rejected",
                    "reference": reference,
                    "parts": parts,
                    "messageDetails": None if fault is None else fault[1],
                    "messageErrorCode": 0 if fault is None else fault[0],
                }
            )
        return entries

    def _message_fault(
        self, token: str, sender: Any, text: Any, channels: Any, rich_content: Any
    ) -> tuple[int, str] | None:
        """Why every recipient of this msg is rejected, or None."""
        if not isinstance(sender, str) or not sender:
            return (301, "No FROM field found in a MSG node.")
        if sender not in self.senders[token]:
            return (301, f"The sender '{sender}' is not registered for this account.")
        if not isinstance(channels, list) or not all(c in CHANNELS for c in channels):
            return (305, f"Unknown channel in allowedChannels: {channels!r}")
        if not (isinstance(text, str) and text) and not rich_content:
            return (304, "A body without content was found")
        return self._template_fault(token, rich_content)

    def _template_fault(self, token: str, rich_content: Any) -> tuple[int, str] | None:
        template = _whatsapp_template(rich_content)
        if template is None:
            return None
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        key = (template.get("namespace"), template.get("element_name"), code)
        found = next(
            (
                t
                for t in self.templates.get(token, [])
                if (t.namespace, t.name, t.language) == key and t.status == "approved"
            ),
            None,
        )
        if found is None:
            return (306, f"Template {key[1]!r} ({key[2]}) is not an approved template.")
        parameters = [
            parameter
            for component in template.get("components") or []
            if isinstance(component, dict) and component.get("type") == "body"
            for parameter in component.get("parameters") or []
        ]
        if len(parameters) != found.variables:
            return (
                307,
                f"The template has {found.variables} variables; {len(parameters)} were given.",
            )
        return None

    def _apply_window(self, token: str, record: dict[str, Any]) -> None:
        """Report a free-form WhatsApp message outside the window failed (62)."""
        url = self.report_urls.get(token)
        if (
            url is None
            or record["channels"] != ["WhatsApp"]
            or _whatsapp_template(record["rich_content"]) is not None
        ):
            return
        wrote = self.customers.get((_bare(record["to"]), _bare(str(record["from"]))))
        if wrote is not None and datetime.now(UTC) - wrote < WINDOW:
            return
        report = delivery_report(
            reference=str(record["reference"]),
            to_number=str(record["to"]),
            status="failed",
            error_code=OUTSIDE_WINDOW,
            error_description="Message failed to send because more than 24 hours have "
            "passed since the customer last replied to this number",
        )

        async def later() -> None:
            await asyncio.sleep(0.05)
            with contextlib.suppress(httpx2.HTTPError):
                await send_report(url, report)

        task = asyncio.get_running_loop().create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _whatsapp_template(rich_content: Any) -> dict[str, Any] | None:
    """The WhatsApp template a message's richContent carries, if any."""
    if not isinstance(rich_content, dict):
        return None
    for item in rich_content.get("conversation") or []:
        template = item.get("template") if isinstance(item, dict) else None
        whatsapp = template.get("whatsapp") if isinstance(template, dict) else None
        if isinstance(whatsapp, dict):
            return whatsapp
    return None
