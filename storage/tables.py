"""The tables, declared once with SQLModel; migrations in ``storage/migrations`` create them.

Uniqueness is enforced by the database, never by a read-then-write check: every value
that must be unique within an account (userName, email addresses, phone numbers,
extension, login id) is a row in ``scim_claims`` whose primary key is
(account, kind, value). Two requests racing for one value cannot both commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, String, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the tables use."""
    return datetime.now(UTC)


class Account(SQLModel, table=True):
    """A customer account: the unit of tenancy; nothing crosses from one to another."""

    __tablename__ = "accounts"

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Integration(SQLModel, table=True):
    """An integration added to an account (Azure AD Sync, Twilio, CM.com, Teams, Office 365).

    ``config`` holds the integration's non-secret settings; ``secret`` holds its secrets
    encrypted with the configured keys (never in clear, never returned).
    """

    __tablename__ = "integrations"
    __table_args__ = (Index("uq_integrations_account_kind", "account_id", "kind", unique=True),)

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(
        sa_column=Column(String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    )
    kind: str = Field(max_length=40)
    status: str = Field(default="setup_incomplete", max_length=40)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    secret: str | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ScimCredential(SQLModel, table=True):
    """The SCIM secret token of an account, as a SHA-256 hash (the token itself is never kept)."""

    __tablename__ = "scim_credentials"

    account_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        )
    )
    token_sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class ScimUser(SQLModel, table=True):
    """A provisioned user: indexed columns for lookups plus the stored SCIM document."""

    __tablename__ = "scim_users"
    __table_args__ = (
        Index("ix_scim_users_account_username", "account_id", "user_name_key"),
        Index("ix_scim_users_account_external", "account_id", "external_id"),
        Index("ix_scim_users_account_pk", "account_id", "pk"),
    )

    pk: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    id: str = Field(max_length=36, unique=True)
    account_id: str = Field(
        sa_column=Column(String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    )
    user_name: str = Field(max_length=512)
    user_name_key: str = Field(max_length=512)
    external_id: str | None = Field(default=None, max_length=512)
    display_name: str | None = Field(default=None, max_length=512)
    given_name: str | None = Field(default=None, max_length=512)
    family_name: str | None = Field(default=None, max_length=512)
    active: bool = Field(default=True)
    extension: str | None = Field(default=None, max_length=64)
    login_id: str | None = Field(default=None, max_length=512)
    document: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ScimUserValue(SQLModel, table=True):
    """One value of a user's multi-valued attribute (emails, phoneNumbers), for filtering."""

    __tablename__ = "scim_user_values"
    __table_args__ = (
        Index("ix_scim_user_values_lookup", "account_id", "attribute", "value_key"),
        Index("ix_scim_user_values_user", "user_pk"),
    )

    pk: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    user_pk: int = Field(
        sa_column=Column(BigId, ForeignKey("scim_users.pk", ondelete="CASCADE"), nullable=False)
    )
    account_id: str = Field(max_length=36)
    attribute: str = Field(max_length=40)
    type: str | None = Field(default=None, max_length=40)
    value: str = Field(max_length=512)
    value_key: str = Field(max_length=512)
    primary: bool = Field(default=False)


class ScimClaim(SQLModel, table=True):
    """A value one user holds that no other user of the account may hold."""

    __tablename__ = "scim_claims"
    __table_args__ = (Index("ix_scim_claims_user", "user_pk"),)

    account_id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(primary_key=True, max_length=40)
    value_key: str = Field(primary_key=True, max_length=512)
    user_pk: int = Field(
        sa_column=Column(BigId, ForeignKey("scim_users.pk", ondelete="CASCADE"), nullable=False)
    )


class Event(SQLModel, table=True):
    """One entry of an account's event history, which is also its ordered feed.

    ``seq`` orders the feed: a consumer resumes after the last ``seq`` it has read.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_account_seq", "account_id", "seq"),
        Index("ix_events_account_time", "account_id", "occurred_at"),
    )

    seq: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    id: str = Field(max_length=36, unique=True)
    account_id: str = Field(max_length=36)
    occurred_at: datetime = Field(default_factory=utcnow)
    actor_name: str = Field(max_length=200)
    actor_id: str | None = Field(default=None, max_length=200)
    action: str = Field(max_length=20)
    event_type: str = Field(max_length=40)
    asset: str = Field(max_length=60)
    asset_id: str | None = Field(default=None, max_length=64)
    type: str = Field(max_length=60)
    properties_changed: list[str] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    details: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )


def _table(model: type[SQLModel]) -> Table:
    """The Core table of a model, for statements (SQLModel does not type ``__table__``)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


ACCOUNTS = _table(Account)
INTEGRATIONS = _table(Integration)
SCIM_CREDENTIALS = _table(ScimCredential)
SCIM_USERS = _table(ScimUser)
SCIM_USER_VALUES = _table(ScimUserValue)
SCIM_CLAIMS = _table(ScimClaim)
EVENTS = _table(Event)
