"""CM.com's inbound-message (MO) and delivery-report webhooks for a channel.

CM.com does not sign its requests: the channel's URL carries a secret, compared in
constant time with the stored digest (403 when wrong). It documents no unique message
id either: an inbound message is remembered by a hash of what identifies it (channel,
sender, CM.com's reference when it sends one, its time, text and media), so CM.com's
retries, every five minutes for up to a month, are recognised as long as the receipt is
kept (35 days).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.channels.service import ChannelContext
from gateway.chat import opt_out
from gateway.chat import service as chat
from gateway.chat.models import InboundMessage, Media, StatusUpdate
from gateway.clients.provider_errors import failure_code
from gateway.events.service import Actor
from gateway.security import token_matches
from gateway.web.auth import Guess, client_key, token_check
from gateway.web.bodies import NulPolicy, decode_json_object, read_body
from gateway.web.errors import BadRequest, Forbidden
from gateway.web.state import app_state
from gateway.webhooks.common import WrongChannel, channel_of

CM_ACTOR = Actor("CM.com", "webhook")
SURFACE = "cm"


class WrongSecret(Forbidden, Guess):
    """The channel's URL carries another secret: 403, as for a wrong signature."""


MAX_ADDRESS = 100
MAX_NAME = 200
MAX_BODY = 256 * 1024
# CM.com's status report codes, in the chat model's vocabulary.
CM_STATUS = {0: "sent", 1: "failed", 2: "delivered", 3: "failed", 4: "read"}


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object.")
    return value


def _text(value: Any, name: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is missing.")
        return None
    if not isinstance(value, str | int):
        raise BadRequest(f"{name} must be a string.")
    return str(value)


def _bounded(value: str | None, name: str) -> str:
    if value is None or len(value) > MAX_ADDRESS:
        raise BadRequest(f"{name} must be at most {MAX_ADDRESS} characters.")
    return value


def _international(number: str) -> str:
    """A number's digits after its international prefix: CM.com writes numbers as
    ``+31...`` or ``0031...`` (and sometimes bare), channels keep E.164."""
    digits = number.strip().removeprefix("+")
    return digits[2:] if digits.startswith("00") else digits


def _check_address(channel: ChannelContext, to: str) -> None:
    """The message was sent to this channel's number or page, as Twilio's receiver checks."""
    if channel.type == "messenger":
        targets = set(channel.pages)
        sent_here = to in targets
    else:
        targets = {channel.number or ""}
        sent_here = _international(to) == _international(channel.number or "")
    if not sent_here:
        raise WrongChannel.of(channel, to, targets)


def _address(channel: ChannelContext, number: str) -> str:
    """The contact's address in the same provider-prefixed form Twilio's use."""
    prefix = {"whatsapp": "whatsapp:", "messenger": "messenger:"}.get(channel.type, "")
    return prefix + number


def _content_key(channel: ChannelContext, sender: str, body: dict[str, Any]) -> str:
    message = body.get("message") or {}
    media = message.get("media") if isinstance(message, dict) else None
    parts = [
        channel.id,
        sender,
        str(body.get("reference") or ""),
        str(body.get("timeUtc") or ""),
        str(message.get("text") if isinstance(message, dict) else ""),
        orjson.dumps(media, option=orjson.OPT_SORT_KEYS).decode() if media else "",
    ]
    return "hash:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def parse_inbound(channel: ChannelContext, body: dict[str, Any]) -> InboundMessage:
    """A customer's message from CM.com's MO JSON."""
    sender = _object(body.get("from"), "from")
    number = _bounded(_text(sender.get("number"), "from.number", required=True), "from.number")
    to = _bounded(
        _text(_object(body.get("to"), "to").get("number"), "to.number", required=True), "to.number"
    )
    _check_address(channel, to)
    message = _object(body.get("message"), "message")
    text = _text(message.get("text"), "message.text")
    media: list[Media] = []
    if message.get("media") is not None:
        item = _object(message["media"], "message.media")
        uri = _text(item.get("mediaUri"), "message.media.mediaUri", required=True) or ""
        media.append(
            Media(
                url=uri,
                content_type=_text(item.get("contentType"), "message.media.contentType"),
                title=_text(item.get("title"), "message.media.title"),
            )
        )
    if not text and not media:
        raise BadRequest("The message has neither text nor media.")
    return InboundMessage(
        channel_id=channel.id,
        account_id=channel.account_id,
        queue_id=channel.queue_id,
        contact_address=_address(channel, number),
        local_address=to,
        contact_name=(_text(sender.get("name"), "from.name") or "")[:MAX_NAME] or None,
        text=text,
        media=media,
        provider_message_id=None,
        dedup_keys=[_content_key(channel, number, body)],
        received_at=datetime.now(UTC),
        extras={
            key: str(body[key]) for key in ("reference", "channel", "timeUtc") if body.get(key)
        },
        channel_type=channel.type,
        opt_change=opt_out.change_of(channel.type, text),
    )


def _reports(body: dict[str, Any]) -> list[dict[str, Any]]:
    entries = _object(body.get("messages"), "messages").get("msg")
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise BadRequest("messages.msg must hold one or more reports.")
    return [_object(entry, "messages.msg[]") for entry in entries]


def parse_reports(channel: ChannelContext, body: dict[str, Any]) -> list[StatusUpdate]:
    """Delivery reports (``messages.msg``) for messages the gateway sent."""
    updates = []
    for entry in _reports(body):
        reference = _text(entry.get("reference"), "reference", required=True)
        status = _object(entry.get("status"), "status")
        code = status.get("code")
        if isinstance(code, str) and code.isdecimal() and code.isascii() and len(code) < 4:
            code = int(code)
        if not isinstance(code, int) or code not in CM_STATUS:
            raise BadRequest(f"status.code must be one of {sorted(CM_STATUS)}.")
        error_code = _text(status.get("errorCode"), "status.errorCode")
        provider_code = None if error_code in (None, "0") else error_code
        updates.append(
            StatusUpdate(
                channel_id=channel.id,
                account_id=channel.account_id,
                status=CM_STATUS[code],
                message_id=reference,
                provider_message_id=None,
                error_code=failure_code("cm", provider_code),
                error_message=_text(status.get("errorDescription"), "status.errorDescription"),
                dedup_keys=[],
                provider_error_code=provider_code,
            )
        )
    return updates


async def receive(request: Request) -> tuple[Response, str]:
    """POST /webhooks/cm/{channel_id}/{secret}: check the secret, parse, store, answer."""
    state = app_state(request)
    channel_id = request.path_params["channel_id"]
    # The secret is a bearer token like the others: guessing it is slowed the same way.
    with token_check(state, SURFACE, f"{client_key(request)} {channel_id}"):
        channel = await channel_of(state.db, channel_id, "cm")
        if not token_matches(request.path_params["secret"], channel.secret_sha256 or ""):
            raise WrongSecret(
                "The channel secret in the URL is wrong: copy the channel's URL again."
            )
    # A NUL is replaced, not refused: CM.com would send the same message again (0015).
    body = decode_json_object(await read_body(request, limit=MAX_BODY), nul=NulPolicy.REPLACE)
    if "messages" in body:
        outcomes = [
            (await chat.apply_status(state.db, update, actor=CM_ACTOR)).outcome
            for update in parse_reports(channel, body)
        ]
        duplicate = all(outcome == "duplicate" for outcome in outcomes)
    else:
        receipt = await chat.receive_message(state.db, parse_inbound(channel, body), actor=CM_ACTOR)
        duplicate = receipt.outcome == "duplicate"
    return Response(status_code=200), "duplicate" if duplicate else "accepted"
