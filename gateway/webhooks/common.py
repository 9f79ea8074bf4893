"""What both receivers share: finding the channel, the plain-text error format, counting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gateway.channels.service import ChannelContext, live_channel
from gateway.web.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    shown,
)
from gateway.web.responses import ErrorReport
from gateway.web.state import app_state
from storage.engine import Database

Handler = Callable[[Request], Awaitable[Response]]


class PlainText:
    """Providers show the body of a refused webhook in their logs: one readable line."""

    def render(self, error: ErrorReport) -> Response:
        """``403 signature: ...`` as text/plain."""
        return PlainTextResponse(
            f"{error.status} {error.code}: {error.detail}\n",
            status_code=error.status,
            headers=error.headers,
        )


PLAIN_TEXT = PlainText()


class WrongChannel(BadRequest):
    """The webhook was meant for another number or page than the channel's."""

    code = "wrong_channel"

    @classmethod
    def of(cls, channel: ChannelContext, to: str, targets: Iterable[str]) -> WrongChannel:
        """The refusal of a message sent to ``to``, naming what the channel is for."""
        return cls(
            f"The message was sent to {shown(to)!r}, but this channel is the {channel.type} "
            f"channel of {', '.join(sorted(targets))}: paste this channel's URL only on that "
            "sender."
        )


# The metric label of each kind of refusal; the first class that matches wins.
REASONS: tuple[tuple[type[GatewayError], str], ...] = (
    (NotFound, "unknown_channel"),
    (Forbidden, "signature"),
    (PayloadTooLarge, "too_large"),
    (RateLimited, "throttled"),
    (WrongChannel, "wrong_channel"),
    (BadRequest, "malformed"),
)


def reason_of(error: GatewayError) -> str:
    """The bounded metric label of a refusal."""
    for kind, reason in REASONS:
        if isinstance(error, kind):
            return reason
    return "unavailable" if error.status >= 500 else "other"


def counted(
    provider: str, handler: Callable[[Request], Awaitable[tuple[Response, str]]]
) -> Handler:
    """Wrap a receiver so that every answer counts in the webhooks metric."""

    async def endpoint(request: Request) -> Response:
        webhooks = app_state(request).metrics.webhooks
        try:
            response, outcome = await handler(request)
        except GatewayError as exc:
            webhooks.labels(provider, "rejected", reason_of(exc)).inc()
            raise
        webhooks.labels(provider, outcome, "").inc()
        return response

    return endpoint


def provider_channel(conn: Connection, channel_id: str, provider: str) -> ChannelContext:
    """The live channel the URL names, or 404 (unknown, deleted, or another provider's)."""
    channel = live_channel(conn, channel_id)
    if channel is None or channel.provider != provider:
        raise NotFound("No such channel: it was deleted, or the URL is mistyped.")
    return channel


async def channel_of(db: Database, channel_id: str, provider: str) -> ChannelContext:
    """``provider_channel`` on a database thread."""
    return await db.query(provider_channel, channel_id, provider)
