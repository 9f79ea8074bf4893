"""Bodies of the channels admin API (also its OpenAPI schemas), and the channel's URL rules."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PROVIDERS = ("twilio", "cm")
TYPES = ("whatsapp", "sms", "messenger")
CONFIRMATION = "confirm"
PRINTABLE = "^[\\x21-\\x7e][\\x20-\\x7e]*$"
WEBHOOK_PREFIX = "/webhooks"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelCreate(_Body):
    """A new channel. WhatsApp and SMS name one of the account's numbers, Messenger pages."""

    provider: Literal["twilio", "cm"]
    type: Literal["whatsapp", "sms", "messenger"]
    number: str | None = Field(
        default=None,
        max_length=32,
        description="WhatsApp / SMS: the number in E.164 (+14155550100); for Twilio one the "
        "account owns.",
    )
    pages: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Messenger: the Facebook page ids the channel answers for.",
    )
    queue_id: str = Field(
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="The chat queue's id (YourSite explorer: Queue tools, Copy queue ID).",
    )


class ChannelOut(BaseModel):
    """A channel, with the webhook URL the provider must call."""

    id: str
    provider: str
    type: str
    number: str | None
    pages: list[str]
    queue_id: str
    webhook_url: str = Field(
        description="Unguessable; CM.com's carries the channel's secret, so keep it private."
    )
    webhook_setup: str = Field(
        description="automatic: the gateway set it on the Twilio number; manual: paste it in "
        "the provider's console (Twilio WhatsApp sender / Messenger page, a Messaging "
        "Service's inbound URL, CM.com's channel configuration)."
    )
    created_at: datetime


class ChannelList(BaseModel):
    """The live channels of an account."""

    items: list[ChannelOut]


class ChannelsDelete(_Body):
    """Channels to delete, with the console's explicit confirmation."""

    ids: list[str] = Field(min_length=1, max_length=100)
    confirm: str = Field(description=f'Must be exactly "{CONFIRMATION}".')


class DeletedChannels(BaseModel):
    """What was deleted."""

    deleted: list[str]


def webhook_url(public_url: str, provider: str, channel_id: str, secret: str | None = None) -> str:
    """The URL a provider calls for a channel: Twilio's is signed, CM.com's carries a secret."""
    base = f"{public_url}{WEBHOOK_PREFIX}/{provider}/{channel_id}"
    return f"{base}/{secret}" if secret else base
