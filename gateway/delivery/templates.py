"""The templates of a channel, read from its provider through the channel's sender and
kept a minute per process.

An agent's console lists a channel's templates each time a reply is written, and every
templated send checks against the list; asking Twilio's Content API each time would cost
a round trip to another continent and its rate limit. A minute is short enough that a
template approved meanwhile shows soon (``fresh`` reads it at once), and a template whose
approval was withdrawn is still refused by the provider, which stays the authority.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection

from gateway.channels.service import account_channel, provider_failure
from gateway.chat.templates import APPROVED, Template
from gateway.clients.http import ProviderError
from gateway.clients.providers import Providers
from gateway.delivery.senders import Sender, sender_for, senders
from gateway.security import SecretBox
from gateway.settings import Settings
from gateway.ttl_cache import TtlCache
from gateway.web.errors import Conflict
from storage.engine import Database

# Seconds a channel's templates are kept.
TEMPLATES_TTL = 60.0
TEMPLATE_TYPES = frozenset({"whatsapp"})


@dataclass(frozen=True)
class _Source:
    provider: str
    credentials: Any
    registered: list[dict[str, Any]] | None


@dataclass
class ProviderTemplates:
    """A ``TemplateCatalog`` over the providers' senders (one per process)."""

    db: Database
    secrets: SecretBox
    providers: Providers
    settings: Settings
    cache: TtlCache[list[Template]] = field(default_factory=lambda: TtlCache(TEMPLATES_TTL))

    def __post_init__(self) -> None:
        self._senders = senders(self.providers, self.settings)

    async def templates(
        self, account_id: str, channel_id: str, *, fresh: bool = False
    ) -> list[Template]:
        """The channel's templates, approved ones first, then by name and language."""
        source = await self.db.query(self._source, account_id, channel_id)
        sender = sender_for(self._senders, source.provider)

        async def load() -> list[Template]:
            try:
                found = await sender.templates(source.credentials, source.registered)
            except ProviderError as exc:
                raise provider_failure(
                    exc, "listing the channel's templates", sender.integration
                ) from exc
            return sorted(found, key=lambda t: (t.approval != APPROVED, t.name, t.language))

        # Registered templates are read with the channel: a new set is a new key at once.
        registered = hashlib.sha256(orjson.dumps(source.registered)).hexdigest()[:16]
        return await self.cache.get(f"{account_id}:{channel_id}:{registered}", load, fresh=fresh)

    def _source(self, conn: Connection, account_id: str, channel_id: str) -> _Source:
        channel = account_channel(conn, account_id, channel_id)
        if channel.type not in TEMPLATE_TYPES:
            raise Conflict(
                f"Templates are WhatsApp's: this is a {channel.type} channel, whose messages "
                "are free text."
            )
        sender: Sender[Any] = sender_for(self._senders, channel.provider)
        credentials = sender.credentials(conn, self.secrets, account_id)
        if credentials is None:
            raise Conflict(
                f"The account's {sender.integration} integration is not configured; its "
                "templates cannot be read."
            )
        return _Source(channel.provider, credentials, channel.templates)
