"""The customer service window of WhatsApp and Facebook Messenger.

Both let a business send free-form messages only within 24 hours of the customer's last
message; outside it the provider refuses the send (Twilio's error 63016), and only an
approved template may go out. SMS has no such window. The gateway shows when each
conversation's window closes and refuses, at once, a free-form reply clearly outside it;
the provider stays the authority for the edge cases (its refusal becomes the same
``window_closed`` failure on the message).

The window is read from the messages themselves, the conversation's last inbound one, so
that it is exact whichever process or version stored that message.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ScalarSelect, literal_column, select

from storage.tables import CONVERSATIONS, MESSAGES

# Channel types with a window, and its length.
WINDOWED = frozenset({"whatsapp", "messenger"})
WINDOW = timedelta(hours=24)

# The time of a conversation's last inbound message, as a column of a query on
# conversations (the index on (conversation_id, pk) read backwards from the newest).
LAST_INBOUND: ScalarSelect[Any] = (
    select(MESSAGES.c.created_at)
    .where(
        MESSAGES.c.conversation_id == CONVERSATIONS.c.id,
        MESSAGES.c.direction == literal_column("'inbound'"),
    )
    .order_by(MESSAGES.c.pk.desc())
    .limit(1)
    .scalar_subquery()
)


def closes_at(channel_type: str, last_inbound: datetime | None) -> datetime | None:
    """When the window of a conversation closes: None for a channel without one (SMS),
    and for a contact who never wrote (closed from the start)."""
    if channel_type not in WINDOWED or last_inbound is None:
        return None
    return last_inbound + WINDOW


def is_open(channel_type: str, last_inbound: datetime | None, now: datetime) -> bool:
    """Whether a free-form message may go out now."""
    closes = closes_at(channel_type, last_inbound)
    return channel_type not in WINDOWED or (closes is not None and now < closes)
