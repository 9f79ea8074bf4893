"""Response bodies of the event history and feed (also their OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

# History cursors are decimal sequence numbers in a string, passed back as cursor=.
CURSOR: JsonDict = {"pattern": "^[0-9]+$"}
# Feed cursors are opaque: SEQ on SQLite, TX.SEQ on PostgreSQL; passed back as after=.
FEED_CURSOR: JsonDict = {"pattern": "^[0-9]+(\\.[0-9]+)?$"}


class ActorOut(BaseModel):
    """Who caused an event."""

    name: str
    id: str | None


class EventOut(BaseModel):
    """One entry of the event history."""

    id: str
    cursor: str = Field(json_schema_extra=CURSOR)
    occurred_at: datetime
    actor: ActorOut
    action: Literal["Create", "Edit", "Delete"]
    event_type: str = Field(
        description="The event's category: Provisioning, Admin, Messaging or Presence "
        "(what happened is ``type``)."
    )
    asset: str
    asset_id: str | None
    type: str
    properties_changed: list[str]
    details: dict[str, Any]


class EventPage(BaseModel):
    """A page of the event history, newest first."""

    items: list[EventOut]
    next_cursor: str | None = Field(
        description="Pass as cursor= for the next (older) page; null on the last page.",
        json_schema_extra=CURSOR,
    )


class FeedItem(BaseModel):
    """One event of the feed, with the normalized object it is about."""

    cursor: str = Field(json_schema_extra=FEED_CURSOR)
    id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class FeedPage(BaseModel):
    """Events in commit order after the given cursor."""

    items: list[FeedItem]
    next_cursor: str = Field(
        description="Pass as after= to continue; unchanged when empty.",
        json_schema_extra=FEED_CURSOR,
    )
