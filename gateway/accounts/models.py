"""Request and response bodies of the accounts admin API (also its OpenAPI schemas).

The request models check shape only (types, lengths, no extra fields). The rules shared
with the CLI (names are stored stripped and must keep a character; only the available
integrations can be added) live in ``service``, which words their errors;
``json_schema_extra`` states them in the schema too, so that a request the document calls
valid is never refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

AZURE_AD_SYNC = "azure_ad_sync"
TWILIO = "twilio"
CMCOM = "cmcom"
# The integrations an admin can add in this version; the data model knows more
# (``service.KINDS``), which a later version will configure.
AVAILABLE_KINDS = (AZURE_AD_SYNC, TWILIO, CMCOM)
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


class IntegrationList(BaseModel):
    """The integrations of an account."""

    items: list[IntegrationOut]


class ScimKeysOut(BaseModel):
    """Paste both into the Entra app's Admin Credentials. The token is shown only once."""

    tenant_url: str = Field(json_schema_extra={"pattern": URL_PATTERN})
    secret_token: str
