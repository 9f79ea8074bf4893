"""Request and response bodies of the accounts admin API (also its OpenAPI schemas)."""

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
