"""Bodies of the endpoints and dead-letter admin API (also its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_Body):
    """A CloudLink endpoint to receive the account's events."""

    url: str = Field(
        min_length=8,
        max_length=2000,
        pattern="^https?://[^\\s/?#@]+(/\\S*)?$",
        description="https to a public address (http and private addresses only with "
        "GATEWAY_ALLOW_PRIVATE_ENDPOINTS).",
    )


class EndpointOut(BaseModel):
    """An endpoint; its secret is never shown again after creation."""

    id: str
    url: str
    status: str = Field(description="enabled, or disabled (410 Gone, or by an operator).")
    disabled_reason: str | None = None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    """The new endpoint and its signing secret, shown only this once."""

    secret: str = Field(description="whsec_...: verify webhook-signature with it.")


class EndpointList(BaseModel):
    """The endpoints of an account."""

    items: list[EndpointOut]


class DeadLetter(BaseModel):
    """A delivery that ran out of attempts."""

    id: str
    kind: str = Field(description="event (to an endpoint), message.send, ...")
    target_id: str = Field(description="The endpoint's id, or the message's.")
    event_id: str | None = None
    attempts: int
    error: str | None
    created_at: datetime
    failed_at: datetime


class DeadLetterList(BaseModel):
    """A page of the account's dead letters, most recently failed first."""

    items: list[DeadLetter]
    next_cursor: str | None = Field(description="Pass as ?before= for the next page.")


class ReplayRequest(BaseModel):
    """Dead letters to deliver again: some by id, or all of the account's."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["all"], "properties": {"all": {"const": True}}},
                {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
            ]
        },
    )

    ids: list[Annotated[str, Field(pattern="^[0-9]{1,18}$")]] = Field(
        default_factory=list, max_length=1000
    )
    all: bool = False


class ReplayResult(BaseModel):
    """How many dead letters were queued again."""

    replayed: int
