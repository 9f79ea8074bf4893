"""What every provider's sender is: the send plan it is given, what it answers, its shape.

A sender knows one provider: which credentials of the account it needs and how to read
them, and how to send one reply with them. It never sees the outbox or the message row:
the send handler reads the plan, caches the credentials, refuses a send whose
integration is not configured, and records the outcome; what differs between providers
is only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

from gateway.chat.templates import Template
from gateway.security import SecretBox

C = TypeVar("C")


@dataclass(frozen=True)
class SendPlan:
    """A reply about to be sent: the message, where it goes, and through which channel.

    ``local_address`` and ``contact_address`` are the conversation's addresses as the
    channel's provider wrote them (``whatsapp:+31...`` for Twilio, for instance).
    """

    message_id: str
    text: str | None
    account_id: str
    channel_id: str
    provider: str
    channel_type: str
    local_address: str
    contact_address: str
    # The approved template it goes out as (id, name, language, variables), or None.
    template: dict[str, Any] | None = None
    # The media it carries: {"url", "content_type"} each.
    media: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Sent:
    """The provider took the message: its id there, and the first status it gave."""

    provider_message_id: str
    status: str


class Sender(Protocol[C]):
    """Sends replies through one provider, with credentials of type ``C``."""

    @property
    def integration(self) -> str:
        """How operators know the provider ("Twilio"): errors about its setup name it."""
        ...

    def credentials(self, conn: Connection, secrets: SecretBox, account_id: str) -> C | None:
        """The account's credentials for this provider, or None when not configured."""
        ...

    async def send(self, plan: SendPlan, credentials: C) -> Sent:
        """One send attempt (the outbox retries); ``ProviderError`` says whether to retry."""
        ...

    async def find_sent(self, plan: SendPlan, credentials: C, since: float) -> list[Sent]:
        """Messages the provider holds that may be this reply, sent since ``since`` (epoch
        seconds) by an attempt whose answer never came back; newest first. Empty when the
        provider offers no way to look."""
        ...

    async def templates(
        self, credentials: C, registered: list[dict[str, Any]] | None
    ) -> list[Template]:
        """The WhatsApp templates a channel can send: the provider's, or those its operator
        ``registered`` on the channel where the provider's API lists none."""
        ...
