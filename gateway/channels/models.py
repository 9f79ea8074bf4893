"""Bodies of the channels admin API (also its OpenAPI schemas), and the channel's URL rules."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NUL_FREE = "^[^\\u0000]*$"
CONFIRMATION = "confirm"
PRINTABLE = "^[\\x21-\\x7e][\\x20-\\x7e]*$"
E164_PATTERN = "^\\+[1-9][0-9]{6,14}$"
E164 = re.compile(E164_PATTERN[1:-1])
PAGE_PATTERN = "^[\\x21-\\x7e]{1,100}$"
MAX_PAGES = 20
Page = Annotated[str, Field(pattern=PAGE_PATTERN)]
WEBHOOK_PREFIX = "/webhooks"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _variants(schema: dict[str, Any]) -> None:
    """The document states what the code checks: a number for WhatsApp and SMS, pages for
    Messenger, never both (one object schema per case)."""
    properties = schema.pop("properties")
    schema.pop("required", None)
    common = {name: properties[name] for name in ("provider", "queue_id")}
    numbered = {
        **common,
        "type": {"type": "string", "enum": ["whatsapp", "sms"]},
        "number": {"type": "string", "pattern": E164_PATTERN, "description": "E.164."},
        "pages": {"type": "array", "maxItems": 0},
    }
    paged = {
        **common,
        "type": {"type": "string", "const": "messenger"},
        "pages": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_PAGES,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": PAGE_PATTERN},
        },
        "number": {"type": "null"},
    }
    schema["oneOf"] = [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["provider", "type", "number", "queue_id"],
            "properties": numbered,
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["provider", "type", "pages", "queue_id"],
            "properties": paged,
        },
    ]
    schema.pop("additionalProperties", None)
    schema.pop("type", None)


class ChannelCreate(BaseModel):
    """A new channel. WhatsApp and SMS name one of the account's numbers, Messenger pages."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_variants)

    provider: Literal["twilio", "cm"]
    type: Literal["whatsapp", "sms", "messenger"]
    number: str | None = Field(
        default=None,
        max_length=32,
        description="WhatsApp / SMS: the number in E.164 (+14155550100); for Twilio one the "
        "account owns.",
    )
    pages: list[Page] = Field(
        default_factory=list,
        max_length=MAX_PAGES,
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

    ids: list[Annotated[str, Field(max_length=64, pattern=NUL_FREE)]] = Field(
        min_length=1, max_length=100
    )
    confirm: Literal["confirm"] = Field(description=f'Must be exactly "{CONFIRMATION}".')


class DeletedChannels(BaseModel):
    """What was deleted."""

    deleted: list[str]


TEMPLATE_NAME = "^[a-z0-9_]{1,512}$"
TEMPLATE_LANGUAGE = "^[a-z]{2,3}(_[A-Z]{2})?$"
MAX_TEMPLATES = 500


class RegisteredTemplate(_Body):
    """A WhatsApp template of a CM.com channel, as the Channels portal's template details
    show it once approved (CM.com's messaging API lists none)."""

    name: str = Field(pattern=TEMPLATE_NAME, description="The template's name (element_name).")
    namespace: str = Field(
        min_length=1,
        max_length=100,
        pattern="^[A-Za-z0-9_-]+$",
        description="The WhatsApp Business account's template namespace.",
    )
    language: str = Field(pattern=TEMPLATE_LANGUAGE, description="Its language: en, nl, pt_BR.")
    body: str = Field(
        min_length=1,
        max_length=1024,
        pattern=NUL_FREE,
        description="Its text, with its variables as {{1}}, {{2}}...",
    )
    category: Literal["MARKETING", "UTILITY", "AUTHENTICATION"] | None = None


class TemplatesSet(_Body):
    """The channel's templates, replacing those registered before (an empty list clears)."""

    items: list[RegisteredTemplate] = Field(max_length=MAX_TEMPLATES)


class TemplatesRegistered(BaseModel):
    """What the channel now holds."""

    channel_id: str
    items: list[RegisteredTemplate]


def webhook_url(public_url: str, provider: str, channel_id: str, secret: str | None = None) -> str:
    """The URL a provider calls for a channel: Twilio's is signed, CM.com's carries a secret."""
    base = f"{public_url}{WEBHOOK_PREFIX}/{provider}/{channel_id}"
    return f"{base}/{secret}" if secret else base
