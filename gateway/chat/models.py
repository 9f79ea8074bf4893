"""The chat model: what receivers hand in (provider-neutral) and what the API shows.

Receivers translate a provider's payload into ``InboundMessage`` or ``StatusUpdate``;
nothing of Twilio or CM.com reaches this package. Statuses use one vocabulary (Twilio's
names, which CM.com's reports are mapped to) and a rank, so a status only moves forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.chat.opt_out import Change
from gateway.chat.templates import Template, TemplateUse
from gateway.web.openapi import NON_SPACE, NUL_FREE

INBOUND = "inbound"
OUTBOUND = "outbound"
OPEN = "open"
CLOSED = "closed"
MAX_TEXT = 4096
# A contact's number a conversation is started with: E.164, WhatsApp's prefix allowed.
ADDRESS_PATTERN = "^(whatsapp:)?\\+[1-9][0-9]{6,14}$"

# Where a message is on its way; a status of a lower or equal rank never replaces a
# higher one, so callbacks that arrive out of order cannot move a message back.
STATUS_RANK = {
    "pending": 0,
    "received": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,
}


@dataclass(frozen=True)
class Media:
    """One attachment: where the provider keeps it and its content type."""

    url: str
    content_type: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    """A customer's message as a receiver verified and parsed it.

    ``dedup_keys`` are the keys under which this delivery is remembered (an idempotency
    token, a content hash): any one seen before makes it a duplicate. A message with a
    ``provider_message_id`` is unique by it within its channel and needs none.
    """

    channel_id: str
    account_id: str
    queue_id: str
    contact_address: str
    local_address: str
    contact_name: str | None
    text: str | None
    media: list[Media]
    provider_message_id: str | None
    dedup_keys: list[str]
    received_at: datetime
    extras: dict[str, str] = field(default_factory=dict)
    # The channel's type (whatsapp, sms, messenger): whether a window applies.
    channel_type: str = ""
    # An SMS that opts the contact out of the channel (STOP) or back in (START).
    opt_change: Change | None = None


@dataclass(frozen=True)
class StatusUpdate:
    """A provider's news about a message the gateway sent.

    ``message_id`` is the gateway's own id when the callback carries it (Twilio's
    StatusCallback URL, CM.com's reference); else the message is found by the
    provider's id.
    """

    channel_id: str
    account_id: str
    status: str
    message_id: str | None
    provider_message_id: str | None
    error_code: str | None
    error_message: str | None
    dedup_keys: list[str]
    # The provider's own error code; ``error_code`` says it in the gateway's words where
    # the receiver knows the case (``window_closed``), else repeats it.
    provider_error_code: str | None = None


@dataclass(frozen=True)
class Receipt:
    """What became of a webhook: accepted, duplicate, stale (status not forward), unknown."""

    outcome: str
    message_id: str | None = None
    conversation_id: str | None = None


class ContactOut(BaseModel):
    """The customer on the other end."""

    id: str
    address: str = Field(description="The provider address, e.g. whatsapp:+31612345678.")
    name: str | None = Field(description="The profile name the provider reported, if any.")
    opted_out_at: datetime | None = Field(
        default=None,
        description="Since when the contact refuses this channel's messages (texted STOP); "
        "null unless they do. Replies are refused meanwhile (409 opted_out).",
    )


class ConversationOut(BaseModel):
    """A conversation of a channel with one contact, routed to the channel's queue."""

    id: str
    channel_id: str
    queue_id: str
    status: str = Field(description="open or closed.")
    contact: ContactOut
    address: str = Field(description="The contact's provider address.")
    name: str | None = Field(description="The contact's profile name.")
    opened_at: datetime
    last_activity_at: datetime
    window_closes_at: datetime | None = Field(
        default=None,
        description="When WhatsApp's or Messenger's 24-hour customer service window closes: "
        "24 hours after the contact's last message. Free-form replies are refused after it "
        "(send a template). Null for SMS, which has no window, and while the contact has "
        "not written.",
    )


class ConversationList(BaseModel):
    """A page of conversations, most recently active first."""

    items: list[ConversationOut]
    next_cursor: str | None = Field(description="Pass as ?before= for the next page.")


class MediaOut(BaseModel):
    """An attachment."""

    url: str
    content_type: str | None = None
    title: str | None = None


class MessageError(BaseModel):
    """Why a message failed, as the provider (or the gateway) said it."""

    code: str | None = Field(
        description="What failed: window_closed when the provider refused a free-form "
        "message outside WhatsApp's 24-hour window, else the provider's code (or the "
        "gateway's, for a failure of its own)."
    )
    message: str | None
    provider_code: str | None = Field(
        default=None, description="The provider's own error code (Twilio's, CM.com's)."
    )


class ReplyAccepted(BaseModel):
    """The reply is stored and queued; its status follows in the feed and the API."""

    id: str
    conversation_id: str
    status: str


class SentTemplate(BaseModel):
    """The approved template a message went out as."""

    id: str
    name: str
    language: str
    variables: dict[str, str]


class MessageOut(BaseModel):
    """A message of a conversation."""

    id: str
    conversation_id: str
    direction: str = Field(description="inbound (from the contact) or outbound (an agent's).")
    text: str | None = Field(
        description="The text; for a template, its text as the variables render it."
    )
    media: list[MediaOut]
    template: SentTemplate | None = Field(
        default=None, description="The template the message went out as; null for free text."
    )
    status: str
    error: MessageError | None = None
    provider_message_id: str | None
    author: str | None = None
    created_at: datetime
    updated_at: datetime


class MessageList(BaseModel):
    """Messages of a conversation, oldest first."""

    items: list[MessageOut]


MAX_MEDIA_URLS = 10
MEDIA_URL = f"^https?://{NON_SPACE}{{1,2040}}$"


class MediaUrl(BaseModel):
    """A medium a reply carries: a URL the provider fetches it from."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        pattern=MEDIA_URL,
        max_length=2048,
        description="Where the provider fetches it: https, public, answering the medium "
        "itself with its Content-Type and Content-Length.",
    )


def _text_or_template(schema: dict[str, Any]) -> None:
    """The document states what the code checks: a template alone, or text and/or media;
    none of them null."""
    properties = schema["properties"]
    for name in ("text", "template"):
        variants = properties[name].pop("anyOf", None)
        if variants:
            properties[name].update(next(v for v in variants if v.get("type") != "null"))
        properties[name].pop("default", None)
    properties["media"].pop("default", None)
    properties["media"]["minItems"] = 1
    schema["oneOf"] = [
        {
            "required": ["template"],
            "not": {"anyOf": [{"required": ["text"]}, {"required": ["media"]}]},
        },
        {
            "anyOf": [{"required": ["text"]}, {"required": ["media"]}],
            "not": {"required": ["template"]},
        },
    ]


class ReplyCreate(BaseModel):
    """An agent's reply, free text or an approved template; it goes out through the
    channel's provider."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_text_or_template)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [
                name
                for name in ("text", "template", "media")
                if name in data and data[name] is None
            ]
            if nulls:
                raise ValueError(f"{' and '.join(nulls)} cannot be null: leave it out")
        return data

    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT,
        pattern=NUL_FREE,
        description="Free text: within WhatsApp's and Messenger's 24-hour window only.",
    )
    template: TemplateUse | None = Field(
        default=None,
        description="An approved WhatsApp template, sent at any time (instead of text).",
    )
    media: list[MediaUrl] = Field(
        default_factory=list,
        max_length=MAX_MEDIA_URLS,
        description="Media the reply carries (with or without text); each is checked "
        "against the channel's types and sizes before anything is queued.",
    )
    author: str | None = Field(
        default=None,
        max_length=200,
        pattern=NUL_FREE,
        description="Who wrote it (an agent id or name).",
    )

    @model_validator(mode="after")
    def _text_or_template(self) -> ReplyCreate:
        if self.template is not None and (self.text is not None or self.media):
            raise ValueError("a template goes alone: give it without text or media")
        if self.template is None and self.text is None and not self.media:
            raise ValueError("give text or template (or media)")
        return self


class ConversationStart(ReplyCreate):
    """A conversation the contact centre starts, with its first message: an approved
    template on WhatsApp (the contact has not written), text or a template on SMS."""

    channel_id: str = Field(
        min_length=1, max_length=36, pattern=NUL_FREE, description="The channel to use."
    )
    address: str = Field(
        pattern=ADDRESS_PATTERN,
        description="The contact's number in E.164 (+31612345678); whatsapp:+31612345678 "
        "is taken too.",
    )


class ConversationStarted(BaseModel):
    """The first message is stored and queued, in a conversation opened for it (or the
    contact's open one)."""

    conversation_id: str
    opened: bool = Field(description="False when the contact's open conversation was used.")
    message: ReplyAccepted


class TemplateVariableOut(BaseModel):
    """A template's variable: its name and the example given when it was submitted."""

    name: str
    example: str | None


class TemplateOut(BaseModel):
    """A WhatsApp template of the channel's provider."""

    id: str = Field(description="What a send names in template.id.")
    name: str
    language: str
    variables: list[TemplateVariableOut]
    approval: str = Field(
        description="approved, or the provider's other states (pending, rejected, paused, "
        "disabled, unsubmitted); only approved ones can be sent."
    )
    category: str | None
    body: str | None = Field(description="Its text with the {{variables}}, where known.")
    rejection_reason: str | None = None

    @classmethod
    def of(cls, template: Template) -> TemplateOut:
        """The API's view of a catalog's template."""
        examples = dict(template.variables)
        return cls(
            id=template.id,
            name=template.name,
            language=template.language,
            variables=[
                TemplateVariableOut(name=name, example=examples.get(name) or None)
                for name in template.variable_names
            ],
            approval=template.approval,
            category=template.category,
            body=template.body,
            rejection_reason=template.rejection_reason,
        )


class TemplateList(BaseModel):
    """The channel's templates, approved ones first."""

    items: list[TemplateOut]
