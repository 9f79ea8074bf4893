"""Request and response bodies of the accounts admin API (also its OpenAPI schemas).

The request models check shape only (types, lengths, no extra fields). The rules shared
with the CLI (names are stored stripped and must keep a character; only the available
integrations can be added) live in ``service``, which words their errors;
``json_schema_extra`` states them in the schema too, so that a request the document calls
valid is never refused.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

AZURE_AD_SYNC = "azure_ad_sync"
TWILIO = "twilio"
CMCOM = "cmcom"
TEAMS = "microsoft_teams"
OFFICE365 = "office365"
# The integrations an admin can add.
AVAILABLE_KINDS = (AZURE_AD_SYNC, TWILIO, CMCOM, TEAMS, OFFICE365)
GUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
MAX_NAME = 200

# The characters str.strip() removes, i.e. those for which str.isspace() is true.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _escaped(chars: str) -> str:
    return "".join(f"\\u{ord(char):04x}" for char in chars)


# A name keeps a character once stripped, and holds no NUL. Spelled with explicit
# escapes because regex engines disagree on what \s means; the leading run and the
# first other character are disjoint, so every engine matches it in linear time.
NAME_PATTERN = f"^[{_escaped(WHITESPACE)}]*[^\\u0000{_escaped(WHITESPACE)}][^\\u0000]*$"
URL_PATTERN = "^https?://"


def _omitted_url(schema: dict[str, Any]) -> None:
    """A URL the response omits rather than sets to null: no ``default: null``."""
    schema.pop("default", None)
    schema["pattern"] = URL_PATTERN


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _account_name(description: str) -> Any:
    """The name field, as every body that sets an account's name declares it."""
    return Field(
        min_length=1,
        max_length=MAX_NAME,
        description=f"{description}; stored without surrounding whitespace.",
        json_schema_extra={"pattern": NAME_PATTERN},
    )


class AccountCreate(_Body):
    """A new customer account."""

    name: str = _account_name("Display name of the account")


class AccountUpdate(_Body):
    """Changes to an account."""

    name: str = _account_name("New display name")


class IntegrationAdd(_Body):
    """An integration to add to an account."""

    kind: str = Field(
        max_length=64,
        description="The integration to add; the others CloudLink knows cannot be added yet "
        "and are refused with 400.",
        json_schema_extra={"enum": list(AVAILABLE_KINDS)},
    )


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
    status: str = Field(
        description="setup_incomplete until configured; keys_generated (Azure AD Sync) or "
        "active (Twilio, CM.com) after."
    )
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    tenant_url: str | SkipJsonSchema[None] = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Azure AD Sync only (absent for the other kinds): paste it into Entra.",
        json_schema_extra=_omitted_url,
    )
    warnings: list[str] | SkipJsonSchema[None] = Field(
        default=None,
        exclude_if=lambda value: not value,
        description="What the change means for other parts (absent when nothing): e.g. "
        "presence monitors that need renewal after a tenant or client id change.",
    )


class TwilioSettings(_Body):
    """The Twilio account to connect; the pair is checked against Twilio before it is saved."""

    name: str = _account_name("A name for this Twilio integration")
    account_sid: str = Field(
        pattern="^AC[0-9a-fA-F]{32}$", description="The Account SID (AC followed by 32 hex)."
    )
    auth_token: str = Field(
        min_length=8,
        max_length=200,
        pattern="^[\\x21-\\x7e]+$",
        description="The Auth Token; stored encrypted, never shown again.",
    )


class CmSettings(_Body):
    """The CM.com account to connect."""

    name: str = _account_name("A name for this CM.com integration")
    cm_account_id: str = Field(
        min_length=1,
        max_length=100,
        pattern="^[\\x21-\\x7e]+$",
        description="The CM.com account ID.",
    )
    product_token: str = Field(
        min_length=8,
        max_length=200,
        pattern="^[\\x21-\\x7e]+$",
        description="The product token; stored encrypted, never shown again.",
    )


class TeamsSettings(_Body):
    """The Azure app registration of the account's Microsoft Teams; checked before it is saved
    (an app token by client credentials)."""

    name: str = _account_name("A name for this integration (the client secret's description)")
    tenant_id: str = Field(pattern=GUID_PATTERN, description="Directory (tenant) id.")
    client_id: str = Field(pattern=GUID_PATTERN, description="Application (client) id.")
    client_secret: str = Field(
        min_length=8,
        max_length=200,
        pattern="^[\\x21-\\x7e]+$",
        description="The client secret's value; stored encrypted, never shown again.",
    )
    secret_expires: date | None = Field(
        default=None, description="When the client secret expires (the system check warns)."
    )
    presence_to_teams: bool | None = Field(
        default=None,
        strict=True,
        description="Write CloudLink presence into Teams; unset keeps the current choice "
        "(off for a new integration).",
    )
    presence_from_teams: bool | None = Field(
        default=None,
        strict=True,
        description="Carry Teams presence into CloudLink through presence monitors; unset "
        "keeps the current choice (on for a new integration).",
    )

    @field_validator("secret_expires", mode="before")
    @classmethod
    def _date_as_text(cls, value: object) -> object:
        # A number is a date to pydantic (seconds since 1970), not to the document.
        if value is not None and not isinstance(value, str | date):
            raise ValueError("must be a date as text, like 2027-06-30")
        return value


class ConsentOut(BaseModel):
    """Send ``consent_url`` to an Office 365 administrator of the customer's organization."""

    consent_url: str = Field(json_schema_extra={"pattern": URL_PATTERN})
    redirect_uri: str = Field(json_schema_extra={"pattern": URL_PATTERN})
    expires_at: datetime = Field(
        description="After this, an unanswered request is shown as not detectable."
    )


class Office365Enable(_Body):
    """Turn the Office 365 integration on or off (after consent was given)."""

    enabled: bool = Field(strict=True)


class IntegrationList(BaseModel):
    """The integrations of an account."""

    items: list[IntegrationOut]


class ScimKeysOut(BaseModel):
    """Paste both into the Entra app's Admin Credentials. The token is shown only once."""

    tenant_url: str = Field(json_schema_extra={"pattern": URL_PATTERN})
    secret_token: str
