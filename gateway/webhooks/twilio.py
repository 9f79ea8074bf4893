"""Twilio's inbound-message and status-callback webhooks for a channel.

Order of checks, each refusing before anything is stored: the channel exists (404), the
body is within bounds and decodes (413, 400), the signature is Twilio's for the public
URL (403), the parameters make sense for this channel (400). Then the chat package
stores the message or the status and the answer (an empty TwiML document) goes back
only after that commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, parse_qsl

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts.providers import twilio_credentials
from gateway.channels.service import ChannelContext
from gateway.chat import opt_out
from gateway.chat import service as chat
from gateway.chat.models import InboundMessage, Media, StatusUpdate
from gateway.clients.provider_errors import failure_code
from gateway.clients.twilio import TwilioCredentials
from gateway.events.service import Actor
from gateway.nul import without_nul
from gateway.security import SecretBox
from gateway.ttl_cache import TtlCache
from gateway.web.bodies import NulPolicy, decode_json_object, read_body
from gateway.web.errors import BadRequest, Forbidden, NotFound, shown
from gateway.web.state import app_state
from gateway.webhooks import signature
from gateway.webhooks.common import WrongChannel, provider_channel

TWILIO_ACTOR = Actor("Twilio", "webhook")
# Twilio's own limit is a few kilobytes (1,600 characters of text, ten media URLs).
MAX_BODY = 64 * 1024
MAX_MEDIA = 10
MAX_NAME = 200
# Twilio's Media URLs run to about 140 characters (three 34-character SIDs); CDN and
# other providers' links are longer.
MAX_URL = 2048
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Parameters of channel extras kept with an inbound message (buttons, locations, ids).
EXTRAS = (
    "WaId",
    "ButtonText",
    "ButtonPayload",
    "Latitude",
    "Longitude",
    "Address",
    "Label",
    "ReferralBody",
    "ReferralSourceUrl",
    "OriginalRepliedMessageSid",
)
PREFIXES = {"whatsapp": "whatsapp:", "messenger": "messenger:", "sms": ""}


def twiml() -> Response:
    """The acknowledgement Twilio expects: an empty TwiML document."""
    return Response(EMPTY_TWIML, media_type="text/xml")


def _channel_and_credentials(
    conn: Connection, secrets: SecretBox, channel_id: str
) -> tuple[ChannelContext, TwilioCredentials]:
    channel = provider_channel(conn, channel_id, "twilio")
    creds = twilio_credentials(conn, secrets, channel.account_id)
    if creds is None:
        raise NotFound("The channel's account has no configured Twilio integration.")
    return channel, creds


def _public_url(request: Request) -> str:
    """The URL Twilio called: the configured public base, then the path and query as sent."""
    base = app_state(request).settings.public_url
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    url = base + raw_path.decode("latin-1")
    query = request.scope.get("query_string", b"")
    return f"{url}?{query.decode('latin-1')}" if query else url


def _parameters(request: Request, body: bytes, url: str) -> list[tuple[str, str]]:
    """The signed parameters: the form fields, or none for a JSON body (hash checked)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("The body is not UTF-8.") from exc
    if media_type == "application/json":
        if not signature.body_hash_matches(url, body):
            raise Forbidden("The bodySHA256 of the URL does not match the body.")
        return []
    if media_type not in ("application/x-www-form-urlencoded", ""):
        raise BadRequest(f"Expected a form-encoded body, got {shown(media_type)!r}.")
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError as exc:
        raise BadRequest("The body is not a valid form encoding.") from exc


def _fields(body: bytes, params: list[tuple[str, str]]) -> dict[str, str]:
    """The parameters by name, decoded, with any NUL replaced (decision 0015): Twilio would
    send the same message again, so a refusal would lose it. The signature was checked on
    the parameters as sent. A JSON body's object gives them directly."""
    if params or not body:
        return {without_nul(name): without_nul(value) for name, value in params}
    value = decode_json_object(body, nul=NulPolicy.REPLACE)
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


def _required(fields: dict[str, str], name: str, longest: int = 100) -> str:
    value = fields.get(name, "")
    if not value:
        raise BadRequest(f"The parameter {name} is missing.")
    if len(value) > longest:
        raise BadRequest(f"The parameter {name} is longer than {longest} characters.")
    return value


def _check_address(channel: ChannelContext, to: str) -> None:
    prefix = PREFIXES[channel.type]
    if channel.type == "messenger":
        targets = {prefix + page for page in channel.pages}
    else:
        targets = {prefix + (channel.number or "")}
    if to not in targets:
        raise WrongChannel.of(channel, to, targets)


def _media(fields: dict[str, str]) -> list[Media]:
    try:
        count = int(fields.get("NumMedia", "0") or "0")
    except ValueError as exc:
        raise BadRequest("NumMedia is not a number.") from exc
    if not 0 <= count <= MAX_MEDIA:
        raise BadRequest(f"NumMedia must be 0..{MAX_MEDIA}.")
    media = []
    for index in range(count):
        url = _required(fields, f"MediaUrl{index}", MAX_URL)
        media.append(Media(url=url, content_type=fields.get(f"MediaContentType{index}") or None))
    return media


def parse_inbound(channel: ChannelContext, fields: dict[str, str]) -> InboundMessage:
    """A customer's message from Twilio's parameters."""
    sid = _required(fields, "MessageSid")
    to = _required(fields, "To")
    _check_address(channel, to)
    media = _media(fields)
    text = fields.get("Body")
    if not text and not media:
        raise BadRequest("The message has neither Body nor media.")
    # A retried message carries its MessageSid again, and a message is unique by it
    # within its channel: no receipt is needed. The idempotency token identifies a
    # delivery too, but adds nothing here (it matters for status callbacks, whose
    # MessageSid repeats from one status to the next).
    return InboundMessage(
        channel_id=channel.id,
        account_id=channel.account_id,
        queue_id=channel.queue_id,
        contact_address=_required(fields, "From"),
        local_address=to,
        contact_name=(fields.get("ProfileName") or "")[:MAX_NAME] or None,
        text=text or None,
        media=media,
        provider_message_id=sid,
        dedup_keys=[],
        received_at=datetime.now(UTC),
        extras={name: fields[name] for name in EXTRAS if fields.get(name)},
        channel_type=channel.type,
        opt_change=opt_out.change_of(channel.type, text, fields.get("OptOutType")),
    )


def parse_status(
    channel: ChannelContext,
    fields: dict[str, str],
    query: dict[str, list[str]],
    idempotency_token: str | None,
) -> StatusUpdate:
    """A status callback of a message the gateway sent."""
    sid = _required(fields, "MessageSid")
    status = _required(fields, "MessageStatus").lower()
    code = (fields.get("ErrorCode") or "")[:40] or None
    keys = ["token:" + idempotency_token] if idempotency_token else []
    return StatusUpdate(
        channel_id=channel.id,
        account_id=channel.account_id,
        status=status,
        message_id=next(iter(query.get("message", [])), None),
        provider_message_id=sid,
        error_code=failure_code("twilio", code),
        error_message=(fields.get("ErrorMessage") or "")[:1000] or None,
        dedup_keys=keys,
        provider_error_code=code,
    )


async def receive(request: Request) -> tuple[Response, str]:
    """POST /webhooks/twilio/{channel_id}: verify, parse, store, then acknowledge."""
    state = app_state(request)
    channel_id = request.path_params["channel_id"]
    cache: TtlCache[tuple[ChannelContext, TwilioCredentials]] = request.state.twilio_channels

    async def load() -> tuple[ChannelContext, TwilioCredentials]:
        return await state.db.query(_channel_and_credentials, state.secrets, channel_id)

    channel, creds = await cache.get(channel_id, load)
    body = await read_body(request, limit=MAX_BODY)
    url = _public_url(request)
    params = _parameters(request, body, url)
    presented = request.headers.get("x-twilio-signature")
    if not signature.matches(creds.auth_token, url, params, presented):
        # The token may have changed since it was cached: check against the stored one.
        channel, creds = await cache.get(channel_id, load, fresh=True)
    if not signature.matches(creds.auth_token, url, params, presented):
        raise Forbidden(
            "X-Twilio-Signature does not match: check that GATEWAY_PUBLIC_URL is the URL "
            "Twilio calls and that the channel's account has the right Auth Token."
        )
    fields = _fields(body, params)
    if fields.get("AccountSid") and fields["AccountSid"] != creds.account_sid:
        raise Forbidden("The request is for another Twilio account than the channel's.")
    token = request.headers.get("i-twilio-idempotency-token") or None
    status = fields.get("MessageStatus", "").lower()
    if status and status != "received":
        update = parse_status(channel, fields, parse_qs(request.url.query), token)
        receipt = await chat.apply_status(state.db, update, actor=TWILIO_ACTOR)
    else:
        receipt = await chat.receive_message(
            state.db, parse_inbound(channel, fields), actor=TWILIO_ACTOR
        )
    return twiml(), "duplicate" if receipt.outcome == "duplicate" else "accepted"
