"""Reading conversations and messages for the admin API (and the sender)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, select, tuple_

from gateway.chat.models import (
    ContactOut,
    ConversationOut,
    MediaOut,
    MessageError,
    MessageOut,
    SentTemplate,
)
from gateway.chat.window import LAST_INBOUND, closes_at
from gateway.web.errors import InvalidValue, NotFound, shown
from storage.rows import MessageRow
from storage.tables import CHANNELS, CONTACTS, CONVERSATIONS, MESSAGES


def _conversations() -> Select[Any]:
    return (
        select(
            CONVERSATIONS,
            CONTACTS.c.address.label("contact_address"),
            CONTACTS.c.name.label("contact_name"),
            CONTACTS.c.opted_out_at.label("contact_opted_out_at"),
            CHANNELS.c.type.label("channel_type"),
            LAST_INBOUND.label("last_inbound_at"),
        )
        .join(CONTACTS, CONTACTS.c.id == CONVERSATIONS.c.contact_id)
        .join(CHANNELS, CHANNELS.c.id == CONVERSATIONS.c.channel_id)
    )


def conversation_out(row: Any) -> ConversationOut:
    """The API shape of a conversation row joined with its contact."""
    return ConversationOut(
        id=row.id,
        channel_id=row.channel_id,
        queue_id=row.queue_id,
        status=row.status,
        contact=ContactOut(
            id=row.contact_id,
            address=row.contact_address,
            name=row.contact_name,
            opted_out_at=row.contact_opted_out_at,
        ),
        address=row.contact_address,
        name=row.contact_name,
        opened_at=row.opened_at,
        last_activity_at=row.last_activity_at,
        window_closes_at=closes_at(row.channel_type, row.last_inbound_at),
    )


def message_out(row: MessageRow) -> MessageOut:
    """The API shape of a message row."""
    failed = row.error_code is not None or row.error_message is not None
    return MessageOut(
        id=row.id,
        conversation_id=row.conversation_id,
        direction=row.direction,
        text=row.text,
        media=[MediaOut(**item) for item in row.media],
        status=row.status,
        error=MessageError(
            code=row.error_code, message=row.error_message, provider_code=row.provider_error_code
        )
        if failed
        else None,
        provider_message_id=row.provider_message_id,
        author=row.author,
        template=SentTemplate.model_validate(row.template) if row.template else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


CURSOR_PATTERN = "^[0-9]{1,16}_[0-9a-f-]{1,36}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def _cursor(row: Any) -> str:
    """Where a page ended: the last conversation's activity time (microseconds) and id."""
    moment = row.last_activity_at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{round(moment.timestamp() * 1_000_000)}_{row.id}"


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidValue(f"before: {shown(cursor)!r} is not a cursor this API returned.")
    micros, _, conversation_id = cursor.partition("_")
    return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), conversation_id


def conversation_page(
    conn: Connection,
    account_id: str,
    *,
    status: str | None,
    channel_id: str | None,
    before: str | None,
    limit: int,
) -> tuple[list[ConversationOut], str | None]:
    """Conversations, most recently active first; ``before`` continues a previous page."""
    query = _conversations().where(CONVERSATIONS.c.account_id == account_id)
    if status is not None:
        query = query.where(CONVERSATIONS.c.status == status)
    if channel_id is not None:
        query = query.where(CONVERSATIONS.c.channel_id == channel_id)
    if before is not None:
        moment, last_id = _parse_cursor(before)
        query = query.where(
            tuple_(CONVERSATIONS.c.last_activity_at, CONVERSATIONS.c.id) < (moment, last_id)
        )
    rows = conn.execute(
        query.order_by(CONVERSATIONS.c.last_activity_at.desc(), CONVERSATIONS.c.id.desc()).limit(
            limit + 1
        )
    ).all()
    page = rows[:limit]
    return [conversation_out(row) for row in page], (
        _cursor(page[-1]) if len(rows) > limit else None
    )


def one_conversation(conn: Connection, account_id: str, conversation_id: str) -> ConversationOut:
    """One conversation of the account, or 404."""
    row = conn.execute(
        _conversations().where(
            CONVERSATIONS.c.account_id == account_id, CONVERSATIONS.c.id == conversation_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No conversation {shown(conversation_id)!r} in this account.")
    return conversation_out(row)


def conversation_messages(
    conn: Connection, account_id: str, conversation_id: str, *, limit: int
) -> list[MessageOut]:
    """The latest ``limit`` messages of a conversation, oldest first."""
    one_conversation(conn, account_id, conversation_id)
    rows = conn.execute(
        select(MESSAGES)
        .where(MESSAGES.c.conversation_id == conversation_id)
        .order_by(MESSAGES.c.pk.desc())
        .limit(limit)
    ).all()
    return [message_out(row) for row in reversed(rows)]


def one_message(conn: Connection, account_id: str, message_id: str) -> MessageOut:
    """One message of the account, or 404."""
    row = conn.execute(
        select(MESSAGES).where(MESSAGES.c.account_id == account_id, MESSAGES.c.id == message_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"No message {shown(message_id)!r} in this account.")
    return message_out(row)
