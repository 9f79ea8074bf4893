"""Request and response bodies of the admin API (also the source of its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreate(_Body):
    """A new customer account."""

    name: str = Field(min_length=1, max_length=200, description="Display name of the account.")


class AccountUpdate(_Body):
    """Changes to an account."""

    name: str = Field(min_length=1, max_length=200)


class IntegrationAdd(_Body):
    """An integration to add to an account."""

    kind: Literal["azure_ad_sync", "twilio", "cmcom", "microsoft_teams", "office365"]


class AccountOut(BaseModel):
    """A customer account."""

    id: str
    name: str
    created_at: datetime
    updated_at: datetime


class AccountList(BaseModel):
    """Every account."""

    items: list[AccountOut]


class IntegrationOut(BaseModel):
    """An integration of an account; secrets are never included."""

    kind: str
    name: str
    status: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    tenant_url: str | None = Field(default=None, description="Azure AD Sync only.")


class IntegrationList(BaseModel):
    """The integrations of an account."""

    items: list[IntegrationOut]


class ScimKeysOut(BaseModel):
    """Paste both into the Entra app's Admin Credentials. The token is shown only once."""

    tenant_url: str
    secret_token: str


class ActorOut(BaseModel):
    """Who caused an event."""

    name: str
    id: str | None


class EventOut(BaseModel):
    """One entry of the event history."""

    id: str
    cursor: str
    occurred_at: datetime
    actor: ActorOut
    action: Literal["Create", "Edit", "Delete"]
    event_type: str
    asset: str
    asset_id: str | None
    type: str
    properties_changed: list[str]
    details: dict[str, Any]


class EventPage(BaseModel):
    """A page of the event history, newest first."""

    items: list[EventOut]
    next_cursor: str | None = Field(description="Pass as cursor= for the next (older) page.")


class FeedItem(BaseModel):
    """One event of the feed, with the normalized object it is about."""

    cursor: str
    id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class FeedPage(BaseModel):
    """Events in commit order after the given cursor."""

    items: list[FeedItem]
    next_cursor: str = Field(description="Pass as after= to continue; unchanged when empty.")


class Problem(BaseModel):
    """An error."""

    error: str
    detail: str
    status: int
