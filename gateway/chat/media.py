"""Links of the gateway's own to a message's media, signed and expiring.

Twilio's media URLs can require the account's SID and Auth Token, which CloudLink must
never hold, and CM.com's expire. So each medium of an inbound message is offered to
CloudLink as a link to the gateway (``/media/...``), which fetches it from the provider
with the account's credentials. The link carries its expiry and an HMAC of what it names
under the gateway's key ring: it opens that one medium until then, without the operator
token, and cannot be altered to open another. Links are signed when an event is pushed,
so that each delivery attempt hands out a link valid for the whole period.
"""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import urlencode

from gateway.chat.models import Media
from gateway.security import SecretBox

MEDIA_PREFIX = "/media"
MESSAGE_EVENTS = frozenset({"message.received"})


def _signed_part(account_id: str, message_id: str, index: int, expires: int) -> str:
    return f"{account_id}/{message_id}/{index}/{expires}"


def media_link(
    secrets: SecretBox,
    public_url: str,
    *,
    account_id: str,
    message_id: str,
    index: int,
    expires: int,
) -> str:
    """The signed link to medium ``index`` of a message, good until ``expires`` (epoch s)."""
    signature = secrets.sign(_signed_part(account_id, message_id, index, expires))
    query = urlencode({"expires": expires, "signature": signature})
    return f"{public_url}{MEDIA_PREFIX}/{account_id}/{message_id}/{index}?{query}"


def link_holds(
    secrets: SecretBox,
    *,
    account_id: str,
    message_id: str,
    index: int,
    expires: str,
    signature: str,
    now: float | None = None,
) -> bool:
    """Whether a link's expiry and signature hold for what it names."""
    if not expires.isdigit() or len(expires) > 12:
        return False
    at = int(expires)
    if at <= (time.time() if now is None else now):
        return False
    return secrets.verify(_signed_part(account_id, message_id, index, at), signature)


def with_links(
    event_type: str,
    account_id: str,
    data: dict[str, Any],
    *,
    secrets: SecretBox,
    public_url: str,
    seconds: int,
) -> dict[str, Any]:
    """An event's data with a signed ``gateway_url`` beside each medium of its message."""
    media = data.get("media")
    if event_type not in MESSAGE_EVENTS or not media or not secrets.configured:
        return data
    expires = int(time.time()) + seconds
    linked = [
        {
            **item,
            "gateway_url": media_link(
                secrets,
                public_url,
                account_id=account_id,
                message_id=str(data["message_id"]),
                index=index,
                expires=expires,
            ),
            "gateway_url_expires_at": expires,
        }
        for index, item in enumerate(media)
    ]
    return {**data, "media": linked}


class MediaCheck(Protocol):
    """Checks a reply's media URLs against what the channel's provider carries (fetching
    each: its type, its size, how many a message takes); the app wires one in."""

    async def checked(self, account_id: str, channel_id: str, urls: list[str]) -> list[Media]:
        """Each medium with its content type, or the refusal (``GatewayError``) naming the
        URL and what is wrong."""
        ...
