"""A message's medium, fetched from its provider with the account's credentials and passed
on as it streams (the admin API's route and the signed links share this)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select
from starlette.responses import Response, StreamingResponse

from gateway.accounts.providers import twilio_credentials
from gateway.accounts.service import require_account
from gateway.clients.http import ProviderError, basic_auth
from gateway.clients.media import MediaRefused, open_medium
from gateway.web.errors import Conflict, NotFound, Unprocessable, UpstreamUnavailable, shown
from gateway.web.state import AppState
from storage.tables import CHANNELS, MESSAGES

# Most media per message (Twilio's MediaUrl0..9).
MAX_MEDIA = 10
# Types a browser shows rather than saves; anything else is offered as a download.
INLINE = ("image/", "audio/", "video/")


@dataclass(frozen=True)
class MediumSource:
    """Where a medium is, and what authenticates the fetch (only at ``auth_origin``)."""

    url: str
    index: int
    authorization: str | None
    auth_origin: str | None


def medium_source(
    conn: Connection, state: AppState, account_id: str, message_id: str, index: int
) -> MediumSource:
    """The provider's URL of medium ``index`` of the account's message, and credentials."""
    require_account(conn, account_id)
    found = conn.execute(
        select(MESSAGES.c.media, CHANNELS.c.provider)
        .join(CHANNELS, CHANNELS.c.id == MESSAGES.c.channel_id)
        .where(MESSAGES.c.id == message_id, MESSAGES.c.account_id == account_id)
    ).one_or_none()
    if found is None:
        raise NotFound(f"No message {shown(message_id)!r} in this account.")
    media = found.media or []
    if not 0 <= index < len(media):
        raise NotFound(f"The message has {len(media)} media (numbered from 0); no {index}.")
    authorization = auth_origin = None
    if found.provider == "twilio":
        creds = twilio_credentials(conn, state.secrets, account_id)
        if creds is not None:
            authorization = basic_auth(creds.account_sid, creds.auth_token)
            auth_origin = state.settings.twilio_api_url
    return MediumSource(str(media[index]["url"]), index, authorization, auth_origin)


async def stream_medium(state: AppState, source: MediumSource) -> Response:
    """The medium as the provider sends it, a chunk at a time; refused (nothing sent) when
    its type or announced size is not one to pass on, or the provider will not give it."""
    try:
        opened = await open_medium(
            state.providers.endpoints,
            source.url,
            authorization=source.authorization,
            auth_origin=source.auth_origin,
            max_bytes=state.settings.media_max_bytes,
            read_timeout=state.settings.outbound_timeout,
        )
    except MediaRefused as exc:
        raise Unprocessable(f"The medium is not passed on: {exc.reason}.") from exc
    except ProviderError as exc:
        raise _failure(exc) from exc
    kind = opened.content_type.split(";", 1)[0].strip().lower()
    disposition = "inline" if kind.startswith(INLINE) else "attachment"
    headers = {
        "Content-Disposition": f'{disposition}; filename="medium-{source.index}"',
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    }
    if opened.length is not None:
        headers["Content-Length"] = str(opened.length)
    return StreamingResponse(opened.chunks, media_type=opened.content_type, headers=headers)


def _failure(exc: ProviderError) -> Exception:
    if exc.status in (404, 410):
        return NotFound(
            "The provider no longer holds this medium (CM.com's links expire; Twilio's media "
            "can be deleted)."
        )
    if exc.status in (401, 403):
        return Conflict(
            "The provider refused the account's credentials for this medium; check the "
            "account's integration."
        )
    if exc.retryable:
        return UpstreamUnavailable(f"The provider could not be reached ({exc}); try again.")
    return Conflict(f"The provider did not give the medium ({exc}).")
