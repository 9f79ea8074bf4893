"""A reply's media, checked against what the channel's provider carries before anything
is queued.

A provider fetches a reply's media itself, after accepting the send, and a medium it
cannot fetch or carry fails the message minutes later (Twilio's 63019, 11200, 63021). So
each URL is fetched here first, as the provider would, without credentials: it must
answer 200 with a type the channel carries, within the channel's size for that type;
and a message takes no more media than the channel does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from gateway.channels.service import account_channel
from gateway.chat.models import Media
from gateway.clients.http import ProviderError
from gateway.clients.media import MediaRefused, open_medium
from gateway.clients.providers import Providers
from gateway.settings import Settings
from gateway.web.errors import Conflict, Unprocessable, shown
from storage.engine import Database

MIB = 1024 * 1024
# How many media one message carries: WhatsApp and Messenger one (Twilio and CM.com
# alike), an MMS up to ten through Twilio, one through CM.com.
MOST_MEDIA = {("twilio", "sms"): 10}
# The largest medium per channel type and family (WhatsApp's and Messenger's published
# limits; MMS messages are held to 5 MB).
SIZES = {
    "whatsapp": {"image/": 5 * MIB, "audio/": 16 * MIB, "video/": 16 * MIB, "": 100 * MIB},
    "messenger": {"": 25 * MIB},
    "sms": {"": 5 * MIB},
}
# WhatsApp shows JPEG and PNG images only.
WHATSAPP_IMAGES = frozenset({"image/jpeg", "image/png"})


@dataclass
class ProviderMediaCheck:
    """A ``MediaCheck`` that fetches each URL as the provider will (one per process)."""

    db: Database
    providers: Providers
    settings: Settings

    async def checked(self, account_id: str, channel_id: str, urls: list[str]) -> list[Media]:
        """Each URL's medium with its type, or the refusal naming the URL."""
        provider, kind = await self.db.query(_channel, account_id, channel_id)
        most = MOST_MEDIA.get((provider, kind), 1)
        if len(urls) > most:
            raise Unprocessable(
                f"A {kind} message through {provider} carries at most {most} medium(s); "
                f"{len(urls)} were given. Nothing was queued."
            )
        return [await self._one(kind, url) for url in urls]

    async def _one(self, kind: str, url: str) -> Media:
        largest = max(SIZES[kind].values())
        try:
            opened = await open_medium(
                self.providers.endpoints,
                url,
                authorization=None,
                auth_origin=None,
                max_bytes=min(largest, self.settings.media_max_bytes),
                read_timeout=self.settings.outbound_timeout,
            )
        except MediaRefused as exc:
            raise _refused(url, exc.reason) from exc
        except ProviderError as exc:
            raise _refused(url, f"it could not be fetched ({exc})") from exc
        content_type = opened.content_type.split(";", 1)[0].strip().lower()
        cap = min(_size_for(kind, content_type), self.settings.media_max_bytes)
        size = opened.length
        try:
            if size is None or size > cap:
                # Unannounced (or past this type's cap): measured, up to the cap.
                size = 0
                async for chunk in opened.chunks:
                    size += len(chunk)
                    if size > cap:
                        break
        except MediaRefused:
            size = cap + 1
        finally:
            await opened.chunks.aclose()
        if size > cap:
            raise _refused(url, f"a {content_type} on {kind} may be at most {cap} bytes")
        image = content_type.startswith("image/")
        if kind == "whatsapp" and image and content_type not in WHATSAPP_IMAGES:
            raise _refused(url, f"WhatsApp shows JPEG and PNG images, not {content_type}")
        return Media(url=url, content_type=content_type)


def _size_for(kind: str, content_type: str) -> int:
    sizes = SIZES[kind]
    for family, size in sizes.items():
        if family and content_type.startswith(family):
            return size
    return sizes[""]


def _refused(url: str, reason: str) -> Unprocessable:
    return Unprocessable(f"The medium {shown(url)!r} cannot go out: {reason}. Nothing was queued.")


def _channel(conn: Connection, account_id: str, channel_id: str) -> tuple[str, str]:
    found = account_channel(conn, account_id, channel_id, deleted=Conflict)
    return found.provider, found.type
