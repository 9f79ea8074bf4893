"""Twilio's REST API (2010-04-01): the calls the gateway makes, and nothing about storage.

Basic auth with the Account SID and Auth Token on every call. Twilio words its errors
as JSON ``{"code", "message", "status"}``; a ``ProviderError`` keeps the code and the
message so that an admin (or a dead letter) shows what Twilio said.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from gateway.clients.http import (
    KIB,
    MIB,
    HttpClient,
    ProviderError,
    Reply,
    basic_auth,
    request,
    with_retries,
)

API = "/2010-04-01"
# Twilio's Content API (its own host): templates with their WhatsApp approval, one list.
CONTENT_AND_APPROVALS = "/v1/ContentAndApprovals"
CONTENT_PAGE_SIZE = 500
# At most this many pages of templates (an account holds tens to a few thousand).
CONTENT_PAGES = 20
# One resource (an account, a message, a number: 1 to 3 KB) or an error.
ANSWER_LIMIT = 64 * KIB
# How far back a send of unknown outcome is looked for between two addresses: pages of
# the newest messages, enough for minutes of a busy conversation.
RECENT_PAGE_SIZE = 100
RECENT_PAGES = 10
# A page of up to 1000 incoming numbers (``PageSize``), each about 3 KB of fields and URLs.
PAGE_LIMIT = 8 * MIB


@dataclass(frozen=True)
class TwilioCredentials:
    """An Account SID and its Auth Token (never logged)."""

    account_sid: str
    auth_token: str


@dataclass(frozen=True)
class PhoneNumber:
    """One of the account's incoming phone numbers."""

    sid: str
    phone_number: str
    sms_url: str | None
    messaging_service_sid: str | None


@dataclass(frozen=True)
class SentMessage:
    """What Twilio answered to a send: its message id and first status."""

    sid: str
    status: str


@dataclass(frozen=True)
class ContentTemplate:
    """One of the account's Content templates with its WhatsApp approval, as listed.

    ``body`` is the text of its first content type that has one; ``variables`` its
    placeholders with the example values it was created with.
    """

    sid: str
    friendly_name: str
    language: str
    variables: dict[str, str]
    body: str | None
    approval_name: str | None
    approval_status: str
    category: str | None
    rejection_reason: str | None


@dataclass(frozen=True)
class ListedMessage:
    """A message as Twilio lists it: enough to recognize a send of ours."""

    sid: str
    status: str
    body: str
    direction: str
    created: datetime | None


def _error(response: Reply, what: str) -> ProviderError:
    try:
        body: Any = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    message = body.get("message") or response.reason
    return ProviderError(
        f"{what}: Twilio answered {response.status}: {message}",
        retryable=False,
        status=response.status,
        code=str(code) if code is not None else None,
    )


def _number(item: dict[str, Any]) -> PhoneNumber:
    return PhoneNumber(
        sid=str(item.get("sid", "")),
        phone_number=str(item.get("phone_number", "")),
        sms_url=item.get("sms_url") or None,
        messaging_service_sid=item.get("messaging_service_sid") or None,
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _content(item: dict[str, Any]) -> ContentTemplate:
    types = _object(item.get("types"))
    body = next(
        (
            str(shape.get("body"))
            for shape in types.values()
            if isinstance(shape, dict) and shape.get("body")
        ),
        None,
    )
    approval = _object(item.get("approval_requests"))
    variables = _object(item.get("variables"))
    return ContentTemplate(
        sid=str(item.get("sid", "")),
        friendly_name=str(item.get("friendly_name") or ""),
        language=str(item.get("language") or ""),
        variables={str(name): str(example) for name, example in variables.items()},
        body=body,
        approval_name=approval.get("name") or None,
        approval_status=str(approval.get("status") or "unsubmitted"),
        category=approval.get("category") or None,
        rejection_reason=approval.get("rejection_reason") or None,
    )


def _next_content_page(body: dict[str, Any]) -> str | None:
    """The Content API's next page: a whole URL in ``meta``."""
    found = _object(body.get("meta")).get("next_page_url")
    return str(found) if found else None


class TwilioApi:
    """Twilio's REST API at ``base_url`` (``GATEWAY_TWILIO_API_URL``), and its Content API
    at ``content_url`` (``GATEWAY_TWILIO_CONTENT_URL``)."""

    def __init__(
        self, http: HttpClient, base_url: str, content_url: str = "https://content.twilio.com"
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/") + API
        self._content = content_url.rstrip("/")

    def _account(self, creds: TwilioCredentials) -> str:
        return f"{self._base}/Accounts/{quote(creds.account_sid, safe='')}"

    async def _call(
        self,
        creds: TwilioCredentials,
        method: str,
        url: str,
        what: str,
        *,
        limit: int = ANSWER_LIMIT,
        **kwargs: Any,
    ) -> dict[str, Any]:
        response = await request(
            self._http,
            method,
            url,
            what=what,
            headers={"Authorization": basic_auth(creds.account_sid, creds.auth_token)},
            limit=limit,
            **kwargs,
        )
        if response.status >= 400:
            raise _error(response, what)
        body = response.json()
        if not isinstance(body, dict):
            raise ProviderError(f"{what}: Twilio answered a non-object", retryable=True)
        return body

    async def check_credentials(self, creds: TwilioCredentials) -> str:
        """The account's friendly name; ``ProviderError`` (status 401/404) if refused."""

        async def call() -> dict[str, Any]:
            return await self._call(
                creds, "GET", self._account(creds) + ".json", "checking the Twilio account"
            )

        body = await with_retries(call)
        return str(body.get("friendly_name") or creds.account_sid)

    async def list_numbers(
        self, creds: TwilioCredentials, *, phone_number: str | None = None
    ) -> list[PhoneNumber]:
        """The account's incoming numbers (every page), or the one matching ``phone_number``."""
        params = {"PageSize": "1000"}
        if phone_number is not None:
            params["PhoneNumber"] = phone_number
        url = self._account(creds) + "/IncomingPhoneNumbers.json"
        numbers: list[PhoneNumber] = []
        async for body in self._pages(creds, url, params, "listing Twilio numbers"):
            numbers.extend(_number(item) for item in body.get("incoming_phone_numbers") or [])
        return numbers

    async def _pages(
        self,
        creds: TwilioCredentials,
        url: str,
        params: dict[str, str],
        what: str,
        *,
        next_of: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The pages of one of Twilio's lists, following ``next_page_uri`` (which carries
        the query) until the last, or what ``next_of`` finds in a page (the Content API
        names its next page in ``meta``); the caller stops early by leaving the loop."""
        page_url: str | None = url
        while page_url is not None:

            async def call(at: str = page_url, query: dict[str, str] = params) -> dict[str, Any]:
                return await self._call(creds, "GET", at, what, params=query, limit=PAGE_LIMIT)

            body = await with_retries(call)
            yield body
            if next_of is not None:
                page_url = next_of(body)
            else:
                next_uri = body.get("next_page_uri")
                page_url = self._base.removesuffix(API) + next_uri if next_uri else None
            params = {}

    async def list_templates(self, creds: TwilioCredentials) -> list[ContentTemplate]:
        """Every Content template of the account with its WhatsApp approval
        (``/v1/ContentAndApprovals``, following ``meta.next_page_url``)."""
        url = self._content + CONTENT_AND_APPROVALS
        params = {"PageSize": str(CONTENT_PAGE_SIZE)}
        found: list[ContentTemplate] = []
        pages = 0
        async for body in self._pages(
            creds, url, params, "listing Twilio templates", next_of=_next_content_page
        ):
            items = body.get("contents") or []
            found.extend(_content(item) for item in items if isinstance(item, dict))
            pages += 1
            if pages == CONTENT_PAGES:
                break
        return found

    async def set_sms_url(self, creds: TwilioCredentials, number_sid: str, url: str) -> None:
        """Point the number's incoming SMS at ``url`` (POST); an empty URL clears it."""
        target = f"{self._account(creds)}/IncomingPhoneNumbers/{quote(number_sid, safe='')}.json"

        async def call() -> dict[str, Any]:
            return await self._call(
                creds,
                "POST",
                target,
                "setting the number's SMS webhook",
                form={"SmsUrl": url, "SmsMethod": "POST"},
            )

        await with_retries(call)

    async def send_message(
        self,
        creds: TwilioCredentials,
        *,
        to: str,
        from_: str,
        body: str | None,
        media_urls: list[str],
        status_callback: str,
        content_sid: str | None = None,
        content_variables: dict[str, str] | None = None,
    ) -> SentMessage:
        """One send attempt (the outbox retries); ``ProviderError`` says whether to retry.

        A template goes as ``ContentSid`` and ``ContentVariables`` (a JSON object) without
        ``Body``: Twilio renders it."""
        form: dict[str, str | list[str]] = {
            "To": to,
            "From": from_,
            "StatusCallback": status_callback,
        }
        if content_sid:
            form["ContentSid"] = content_sid
            if content_variables:
                form["ContentVariables"] = json.dumps(content_variables, ensure_ascii=False)
        elif body:
            form["Body"] = body
        if media_urls:
            form["MediaUrl"] = media_urls
        answer = await self._call(
            creds, "POST", self._account(creds) + "/Messages.json", "sending via Twilio", form=form
        )
        return SentMessage(sid=str(answer.get("sid", "")), status=str(answer.get("status", "")))

    async def recent_messages(
        self, creds: TwilioCredentials, *, to: str, from_: str, since: float
    ) -> list[ListedMessage]:
        """The messages from ``from_`` to ``to`` created since ``since`` (epoch seconds),
        newest first, read page by page until one reaches past ``since`` (at most
        ``RECENT_PAGES`` pages).

        Twilio takes no idempotency key on a send, so this is how a send whose answer never
        came back (a timeout, a process killed mid-call) is found before it is repeated.
        """
        params = {"To": to, "From": from_, "PageSize": str(RECENT_PAGE_SIZE)}
        url = self._account(creds) + "/Messages.json"
        found: list[ListedMessage] = []
        pages = 0
        async for body in self._pages(creds, url, params, "listing Twilio messages"):
            page = [_listed(item) for item in body.get("messages") or [] if isinstance(item, dict)]
            older = [m for m in page if m.created is not None and m.created.timestamp() < since]
            found.extend(m for m in page if m not in older)
            pages += 1
            if older or pages == RECENT_PAGES:
                break
        return found


def _listed(item: dict[str, Any]) -> ListedMessage:
    try:
        created: datetime | None = parsedate_to_datetime(str(item.get("date_created")))
    except (TypeError, ValueError):
        created = None
    return ListedMessage(
        sid=str(item.get("sid", "")),
        status=str(item.get("status", "")),
        body=str(item.get("body") or ""),
        direction=str(item.get("direction", "")),
        created=created,
    )
