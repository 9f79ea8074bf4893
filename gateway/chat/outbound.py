"""What an agent sends: a reply in a conversation, or a conversation the contact centre
starts, each as free text or an approved WhatsApp template.

Each is one transaction: the message stored pending, the conversation touched (or opened,
with its contact), the send queued in the outbox and ``message.queued`` recorded. What
the provider would refuse minutes later is refused here at once, with nothing stored:
a closed conversation or deleted channel, a contact who opted out, free text outside
WhatsApp's or Messenger's 24-hour window (a template is what goes out then).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from gateway.channels.models import E164
from gateway.channels.service import account_channel
from gateway.chat import window
from gateway.chat.media import MediaCheck
from gateway.chat.models import (
    CLOSED,
    OPEN,
    OUTBOUND,
    STATUS_RANK,
    ConversationStarted,
    Media,
    ReplyAccepted,
    ReplyCreate,
)
from gateway.chat.service import (
    CHAT_CATEGORY,
    SEND,
    NewConversation,
    new_conversation,
    open_conversation_of,
)
from gateway.chat.templates import ChosenTemplate, TemplateCatalog, choose
from gateway.chat.window import LAST_INBOUND
from gateway.events.service import Actor, record_event
from gateway.web.errors import (
    Conflict,
    NotFound,
    OptedOut,
    Unprocessable,
    WindowClosed,
    shown,
)
from storage.engine import Database
from storage.rows import ChannelRow
from storage.tables import CHANNELS, CONTACTS, CONVERSATIONS, MESSAGES, utcnow
from storage.transaction import Transaction
from storage.upsert import insert_if_absent

_event = functools.partial(record_event, category=CHAT_CATEGORY)
# How a contact's address is written per channel type (the receivers write the same).
ADDRESS_PREFIX = {"whatsapp": "whatsapp:", "sms": ""}


@dataclass(frozen=True)
class Outgoing:
    """What an agent sends: free text, or a checked template and its rendered text."""

    text: str | None
    template: ChosenTemplate | None
    author: str | None
    media: tuple[Media, ...] = ()

    @property
    def shown_text(self) -> str | None:
        """The text the contact reads (a template's as its variables render it)."""
        return self.template.text if self.template is not None else self.text


# The channel a message goes out on, found only when a check needs it: free text alone
# (most replies) needs no lookup before its transaction.
ChannelOf = Callable[[], Awaitable[str]]


def known_channel(channel_id: str) -> ChannelOf:
    """A ``ChannelOf`` for a channel the request names."""

    async def found() -> str:
        return channel_id

    return found


def channel_of_conversation(db: Database, account_id: str, conversation_id: str) -> ChannelOf:
    """A ``ChannelOf`` reading the conversation's channel (404 for another account's)."""
    return lambda: db.query(conversation_channel, account_id, conversation_id)


async def checked_outgoing(
    catalog: TemplateCatalog,
    media_check: MediaCheck,
    account_id: str,
    channel_of: ChannelOf,
    body: ReplyCreate,
) -> Outgoing:
    """What an agent's body sends: its text and media, or its template, each checked
    against what the channel's provider offers and carries (the API and the CLI alike)."""
    if body.template is not None:
        templates = await catalog.templates(account_id, await channel_of())
        return Outgoing(text=None, template=choose(templates, body.template), author=body.author)
    media = (
        await media_check.checked(account_id, await channel_of(), [m.url for m in body.media])
        if body.media
        else []
    )
    return Outgoing(text=body.text, template=None, author=body.author, media=tuple(media))


async def queue_reply(
    db: Database,
    *,
    account_id: str,
    conversation_id: str,
    outgoing: Outgoing,
    actor: Actor,
) -> ReplyAccepted:
    """Store an agent's reply and queue its sending: the conversation must be open on a
    live channel, the contact not opted out, and free text within the window."""

    def work(tx: Transaction) -> ReplyAccepted:
        channel_id = _repliable_channel(tx.conn, account_id, conversation_id, outgoing)
        return _queue(
            tx,
            account_id=account_id,
            conversation_id=conversation_id,
            channel_id=channel_id,
            outgoing=outgoing,
            actor=actor,
        )

    return await db.transact(work)


async def start_conversation(
    db: Database,
    *,
    account_id: str,
    channel_id: str,
    address: str,
    outgoing: Outgoing,
    actor: Actor,
) -> ConversationStarted:
    """Open a conversation with a contact (who may never have written) by sending it a
    first message; a contact with an open conversation gets the message there."""

    def work(tx: Transaction) -> ConversationStarted:
        channel = _startable_channel(tx.conn, account_id, channel_id)
        contact_address = _contact_address(channel.type, address)
        local_address = ADDRESS_PREFIX[channel.type] + (channel.number or "")
        contact = _contact(tx, account_id, channel_id, contact_address)
        conversation_id, opened = _conversation(
            tx, channel, contact, local_address, actor, author=outgoing.author
        )
        _check_sendable(tx.conn, conversation_id, outgoing)
        accepted = _queue(
            tx,
            account_id=account_id,
            conversation_id=conversation_id,
            channel_id=channel_id,
            outgoing=outgoing,
            actor=actor,
        )
        return ConversationStarted(conversation_id=conversation_id, opened=opened, message=accepted)

    return await db.transact(work)


def _queue(
    tx: Transaction,
    *,
    account_id: str,
    conversation_id: str,
    channel_id: str,
    outgoing: Outgoing,
    actor: Actor,
) -> ReplyAccepted:
    message_id = str(uuid.uuid4())
    now = utcnow()
    stored = outgoing.template.stored() if outgoing.template is not None else None
    tx.conn.execute(
        insert(MESSAGES).values(
            id=message_id,
            account_id=account_id,
            conversation_id=conversation_id,
            channel_id=channel_id,
            direction=OUTBOUND,
            text=outgoing.shown_text,
            media=[asdict(medium) for medium in outgoing.media],
            status="pending",
            status_rank=STATUS_RANK["pending"],
            author=outgoing.author,
            template=stored,
            created_at=now,
            updated_at=now,
        )
    )
    tx.conn.execute(
        update(CONVERSATIONS)
        .where(CONVERSATIONS.c.id == conversation_id)
        .values(last_activity_at=now)
    )
    tx.enqueue(account_id=account_id, kind=SEND, target_id=message_id, payload={})
    _event(
        tx,
        account_id=account_id,
        actor=actor,
        action="Create",
        asset="Message",
        asset_id=message_id,
        type="message.queued",
        properties_changed=[
            "text",
            *(["template"] if stored else []),
            *(["media"] if outgoing.media else []),
        ],
        details={
            "message_id": message_id,
            "conversation_id": conversation_id,
            "channel_id": channel_id,
            "direction": OUTBOUND,
            "text": outgoing.shown_text,
            **({"template": stored} if stored else {}),
            **({"media": [asdict(m) for m in outgoing.media]} if outgoing.media else {}),
            "author": outgoing.author,
            "status": "pending",
        },
    )
    return ReplyAccepted(id=message_id, conversation_id=conversation_id, status="pending")


_SENDABLE = (
    select(
        CONVERSATIONS.c.status,
        CONVERSATIONS.c.channel_id,
        CHANNELS.c.deleted_at,
        CHANNELS.c.type,
        CONTACTS.c.opted_out_at,
        LAST_INBOUND.label("last_inbound_at"),
    )
    .join(CHANNELS, CHANNELS.c.id == CONVERSATIONS.c.channel_id)
    .join(CONTACTS, CONTACTS.c.id == CONVERSATIONS.c.contact_id)
)


def conversation_channel(conn: Connection, account_id: str, conversation_id: str) -> str:
    """The channel of the account's conversation (404 otherwise): where its templates are."""
    found: str | None = conn.execute(
        select(CONVERSATIONS.c.channel_id).where(
            CONVERSATIONS.c.id == conversation_id, CONVERSATIONS.c.account_id == account_id
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"No conversation {shown(conversation_id)!r} in this account.")
    return found


def _repliable_channel(
    conn: Connection, account_id: str, conversation_id: str, outgoing: Outgoing
) -> str:
    """The channel of a conversation a reply can go to: the account's (404 otherwise), on a
    channel not deleted, not closed, to a contact not opted out, and free text within the
    customer service window of WhatsApp and Messenger (409 saying which)."""
    found = conn.execute(
        _SENDABLE.where(
            CONVERSATIONS.c.id == conversation_id,
            CONVERSATIONS.c.account_id == account_id,
        )
    ).one_or_none()
    if found is None:
        raise NotFound(f"No conversation {shown(conversation_id)!r} in this account.")
    _refuse_unsendable(found, outgoing)
    return str(found.channel_id)


def _check_sendable(conn: Connection, conversation_id: str, outgoing: Outgoing) -> None:
    _refuse_unsendable(
        conn.execute(_SENDABLE.where(CONVERSATIONS.c.id == conversation_id)).one(), outgoing
    )


def _refuse_unsendable(found: Any, outgoing: Outgoing) -> None:
    if found.deleted_at is not None:
        raise Conflict("The conversation's channel was deleted; replies cannot be sent.")
    if found.status == CLOSED:
        raise Conflict("The conversation is closed.")
    if found.opted_out_at is not None:
        raise OptedOut(
            "The contact opted out of this channel's messages (texted STOP) at "
            f"{found.opted_out_at.isoformat()}; the provider refuses to send to them until "
            "they text START. Nothing was queued.",
            fields={"opted_out_at": found.opted_out_at.isoformat()},
        )
    if outgoing.template is None and not window.is_open(
        found.type, found.last_inbound_at, utcnow()
    ):
        raise window_closed(found.type, found.last_inbound_at)


def window_closed(channel_type: str, last_inbound: datetime | None) -> WindowClosed:
    """The refusal of a free-form reply outside the window, with when it closed."""
    closed = window.closes_at(channel_type, last_inbound)
    kind = "WhatsApp" if channel_type == "whatsapp" else "Messenger"
    since = (
        f"closed at {closed.isoformat()}, 24 hours after the contact's last message"
        if closed is not None
        else "is closed: the contact has not written on this channel"
    )
    return WindowClosed(
        f"The {kind} customer service window of this conversation {since}. The provider "
        "refuses free-form messages outside it; send an approved template instead, and "
        "the window opens again when the contact answers. Nothing was queued.",
        fields={"window_closes_at": closed.isoformat() if closed is not None else None},
    )


def _startable_channel(conn: Connection, account_id: str, channel_id: str) -> ChannelRow:
    channel = account_channel(conn, account_id, channel_id, deleted=Conflict)
    if channel.type not in ADDRESS_PREFIX:
        raise Conflict(
            f"A {channel.type} conversation is started by the contact: the business may only "
            "answer. Start conversations on a WhatsApp or SMS channel."
        )
    return channel


def _contact_address(channel_type: str, address: str) -> str:
    """The contact's address as the channel's receiver writes it, from an E.164 number
    (with or without the channel's ``whatsapp:`` prefix)."""
    prefix = ADDRESS_PREFIX[channel_type]
    number = address.strip()
    if prefix and number.startswith(prefix):
        number = number[len(prefix) :]
    if E164.fullmatch(number) is None:
        raise Unprocessable(
            f"address must be the contact's number in E.164, like +31612345678, for this "
            f"{channel_type} channel; got {shown(address)!r}."
        )
    return prefix + number


def _contact(tx: Transaction, account_id: str, channel_id: str, address: str) -> dict[str, Any]:
    where = (CONTACTS.c.channel_id == channel_id) & (CONTACTS.c.address == address)
    row = tx.conn.execute(select(CONTACTS.c.id, CONTACTS.c.name).where(where)).one_or_none()
    if row is None:
        contact = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "channel_id": channel_id,
            "address": address,
            "name": None,
            "created_at": utcnow(),
        }
        if insert_if_absent(tx.conn, CONTACTS, contact):
            return contact
        row = tx.conn.execute(select(CONTACTS.c.id, CONTACTS.c.name).where(where)).one()
    return {"id": row.id, "address": address, "name": row.name}


def _conversation(
    tx: Transaction,
    channel: Any,
    contact: dict[str, Any],
    local_address: str,
    actor: Actor,
    *,
    author: str | None,
) -> tuple[str, bool]:
    """The contact's open conversation, or a new one with its ``conversation.opened``."""
    found = tx.conn.execute(
        select(CONVERSATIONS.c.id).where(
            CONVERSATIONS.c.contact_id == contact["id"], CONVERSATIONS.c.status == OPEN
        )
    ).scalar_one_or_none()
    if found is not None:
        return str(found), False
    opened = new_conversation(
        tx,
        NewConversation(
            account_id=channel.account_id,
            channel_id=channel.id,
            queue_id=channel.queue_id,
            local_address=local_address,
            contact=contact,
        ),
        actor,
        now=utcnow(),
        details={"started_by": author or actor.name},
    )
    if opened is None:
        return open_conversation_of(tx.conn, contact["id"]), False
    return opened, True
