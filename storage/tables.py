"""The tables, declared once with SQLModel; migrations in ``storage/migrations`` create them.

Uniqueness is enforced by the database, never by a read-then-write check: every value
that must be unique within an account (userName, email addresses, phone numbers,
extension, login id) is a row in ``scim_claims`` whose primary key is
(account, kind, value). Two requests racing for one value cannot both commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
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


class ScimUserCount(SQLModel, table=True):
    """How many users an account has, kept by triggers on ``scim_users`` (revision 0008) so
    that a page of ``GET /Users`` needs no ``count(*)`` over them, whichever code inserts.

    Spread over 16 rows per account (row ``pk % 16``, written in the triggers) so that
    concurrent creates of one account seldom wait for one row's lock on PostgreSQL.
    ``removed`` only grows: a change of it tells a reader that positions in the list
    may have moved (a page found by seeking from a remembered position).
    """

    __tablename__ = "scim_user_counts"

    account_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        )
    )
    shard: int = Field(primary_key=True)
    users: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    removed: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))


class ScimUserBlock(SQLModel, table=True):
    """How many users an account has in each block of 8,192 consecutive ``pk`` values
    (``pk >> 13``), kept by triggers on ``scim_users`` (revision 0009) so that a page
    asked for out of order is found by summing blocks and seeking into one, not by
    stepping over every user before it. 16 rows a block (``pk % 16``), as for the counts.
    """

    __tablename__ = "scim_user_blocks"

    account_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        )
    )
    block: int = Field(sa_column=Column(BigInteger, primary_key=True))
    shard: int = Field(primary_key=True)
    users: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))


class Event(SQLModel, table=True):
    """One entry of an account's event history, which is also its ordered feed.

    ``(tx_order, seq)`` orders the feed: a consumer resumes after the last position it
    has read.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_account_seq", "account_id", "seq"),
        Index("ix_events_account_time", "account_id", "occurred_at"),
        Index("ix_events_account_feed", "account_id", "tx_order", "seq"),
    )

    seq: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    id: str = Field(max_length=36, unique=True)
    account_id: str = Field(max_length=36)
    # PostgreSQL: the id of the inserting transaction; the feed reads in (tx_order, seq)
    # order up to the oldest transaction still running (decision 0011). SQLite: 0.
    tx_order: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
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


def _account_fk() -> Any:
    return Field(
        sa_column=Column(String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    )


class Channel(SQLModel, table=True):
    """A messaging channel: one provider's WhatsApp, SMS or Messenger entry, bound to a queue.

    A channel is never deleted, only marked ``deleted_at``: its conversations stay
    readable, and its webhook URL stops answering. ``secret_sha256`` verifies the
    CM.com URL secret in constant time; ``secret`` keeps it encrypted so that the
    console can show the URL again.
    """

    __tablename__ = "channels"
    __table_args__ = (
        Index("ix_channels_account", "account_id", "created_at"),
        Index(
            "uq_channels_live_number",
            "account_id",
            "provider",
            "type",
            "number",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = _account_fk()
    provider: str = Field(max_length=20)
    type: str = Field(max_length=20)
    number: str | None = Field(default=None, max_length=32)
    pages: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    queue_id: str = Field(max_length=200)
    secret_sha256: str | None = Field(default=None, max_length=64)
    secret: str | None = Field(default=None)
    provider_ref: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    deleted_at: datetime | None = Field(default=None)
    # A CM.com channel's WhatsApp templates, as its operator registered them (CM.com's
    # messaging API lists none); None for Twilio's, whose Content API is read instead.
    templates: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSONType, nullable=True)
    )


class Contact(SQLModel, table=True):
    """A customer as one channel knows them: the provider address and the profile name."""

    __tablename__ = "contacts"
    __table_args__ = (Index("uq_contacts_channel_address", "channel_id", "address", unique=True),)

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = _account_fk()
    channel_id: str = Field(foreign_key="channels.id", max_length=36)
    address: str = Field(max_length=200)
    name: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    # Since when the contact refuses this channel's messages (texted STOP); None: they don't.
    opted_out_at: datetime | None = Field(default=None)


class Conversation(SQLModel, table=True):
    """A chat between a contact and the queue of its channel; at most one is open per contact."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index(
            "uq_conversations_open_contact",
            "contact_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_conversations_account", "account_id", "last_activity_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = _account_fk()
    channel_id: str = Field(foreign_key="channels.id", max_length=36)
    contact_id: str = Field(foreign_key="contacts.id", max_length=36)
    queue_id: str = Field(max_length=200)
    local_address: str = Field(max_length=200)
    status: str = Field(default="open", max_length=20)
    opened_at: datetime = Field(default_factory=utcnow)
    last_activity_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = Field(default=None)


class Message(SQLModel, table=True):
    """One message of a conversation, either way, with its delivery status.

    ``(channel_id, provider_message_id)`` is unique: a provider's retry of a message it
    already delivered cannot insert it twice. ``status_rank`` lets a status update move
    the status only forward, whatever order the callbacks arrive in.
    """

    __tablename__ = "messages"
    __table_args__ = (
        Index("uq_messages_provider_id", "channel_id", "provider_message_id", unique=True),
        Index("ix_messages_conversation", "conversation_id", "pk"),
    )

    pk: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    id: str = Field(max_length=36, unique=True)
    account_id: str = _account_fk()
    conversation_id: str = Field(foreign_key="conversations.id", max_length=36)
    channel_id: str = Field(foreign_key="channels.id", max_length=36)
    direction: str = Field(max_length=10)
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    media: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    provider_message_id: str | None = Field(default=None, max_length=100)
    status: str = Field(max_length=20)
    status_rank: int = Field(default=0)
    error_code: str | None = Field(default=None, max_length=40)
    error_message: str | None = Field(default=None, max_length=1000)
    # The provider's own code when ``error_code`` names the case in the gateway's words.
    provider_error_code: str | None = Field(default=None, max_length=40)
    author: str | None = Field(default=None, max_length=200)
    # The approved template the message went out as (id, name, language, variables);
    # None for free-form text. ``text`` holds its rendered text.
    template: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class WebhookReceipt(SQLModel, table=True):
    """A webhook already applied, by its dedup key (idempotency token or content hash)."""

    __tablename__ = "webhook_receipts"
    __table_args__ = (Index("ix_webhook_receipts_time", "received_at"),)

    channel_id: str = Field(primary_key=True, max_length=36)
    key: str = Field(primary_key=True, max_length=128)
    received_at: float = Field(sa_column=Column(Double, nullable=False))


class Endpoint(SQLModel, table=True):
    """A CloudLink endpoint that receives the account's events as Standard Webhooks."""

    __tablename__ = "endpoints"
    __table_args__ = (Index("ix_endpoints_account", "account_id", "status"),)

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = _account_fk()
    url: str = Field(max_length=2000)
    secret: str
    status: str = Field(default="enabled", max_length=20)
    disabled_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class OutboxRow(SQLModel, table=True):
    """A side effect to carry out, written in the transaction of the change that causes it.

    Times are seconds since the epoch (``Double``) so that claims compare numbers on
    both backends. A row is pending until a worker claims it (``lease_owner`` and
    ``lease_until``); a claim whose lease has run out is free again. Done rows are
    deleted; dead ones stay for the dead-letter view and replay. ``outcome_unknown``:
    an earlier attempt may have reached the other side without its answer coming back
    (its process died, it was stopped, or the call went unanswered), so a handler whose
    call creates something looks before it repeats it.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "available_at"),
        Index("ix_outbox_account", "account_id", "status"),
        # One pending job per target (presence writes, monitor upkeep) is looked up by it.
        Index("ix_outbox_target", "kind", "target_id", "status"),
    )

    pk: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    account_id: str = Field(max_length=36)
    kind: str = Field(max_length=40)
    target_id: str = Field(max_length=36)
    payload: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    status: str = Field(default="pending", max_length=20)
    attempts: int = Field(default=0)
    available_at: float = Field(sa_column=Column(Double, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    last_error: str | None = Field(default=None, max_length=1000)
    outcome_unknown: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    created_at: float = Field(sa_column=Column(Double, nullable=False))
    updated_at: float = Field(sa_column=Column(Double, nullable=False))


class PresenceUser(SQLModel, table=True):
    """A CloudLink user whose presence the gateway carries, by email, and its Teams user.

    ``teams_user_id`` is looked up once by email / UPN and kept; ``monitor_id`` is the
    presence monitor whose subscription covers the user. ``written`` is the state last
    written into Teams (loop suppression: Teams reporting it back is no change).
    """

    __tablename__ = "presence_users"
    __table_args__ = (
        Index("uq_presence_users_account_email", "account_id", "email", unique=True),
        Index("ix_presence_users_teams", "account_id", "teams_user_id"),
        Index("ix_presence_users_monitor", "monitor_id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = _account_fk()
    email: str = Field(max_length=512)
    teams_user_id: str | None = Field(default=None, max_length=64)
    looked_up_at: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    monitor_id: str | None = Field(default=None, max_length=36)
    written: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PresenceState(SQLModel, table=True):
    """A user's presence from one source (teams, cloudlink, phone), with the raw data."""

    __tablename__ = "presence_states"

    user_id: str = Field(
        sa_column=Column(
            String(36),
            ForeignKey("presence_users.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    source: str = Field(primary_key=True, max_length=20)
    availability: str = Field(max_length=40)
    activity: str = Field(max_length=60)
    raw: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    version: int = Field(default=1)
    updated_at: datetime = Field(default_factory=utcnow)


class PresenceMonitor(SQLModel, table=True):
    """A Teams user account whose delegated token holds one presence subscription.

    Secrets (refresh token, PKCE verifier, client state) are encrypted in ``secret``;
    the pending sign-in's state is kept as a digest. Times are epoch seconds.
    """

    __tablename__ = "presence_monitors"
    __table_args__ = (
        Index("uq_presence_monitors_account_upn", "account_id", "upn", unique=True),
        Index("ix_presence_monitors_state", "auth_state"),
        Index("ix_presence_monitors_subscription", "subscription_id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    account_id: str = _account_fk()
    upn: str = Field(max_length=320)
    status: str = Field(default="not_authorized", max_length=20)
    tenant_id: str | None = Field(default=None, max_length=64)
    client_id: str | None = Field(default=None, max_length=64)
    secret: str | None = Field(default=None)
    auth_state: str | None = Field(default=None, max_length=64)
    auth_expires_at: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    subscription_id: str | None = Field(default=None, max_length=64)
    subscription_expires_at: float | None = Field(
        default=None, sa_column=Column(Double, nullable=True)
    )
    # Digest of the user ids the subscription covers: a change means a new subscription.
    subscription_hash: str | None = Field(default=None, max_length=64)
    # The certificate Graph encrypts this subscription's resource data with.
    certificate_id: str | None = Field(default=None, max_length=36)
    # Digest of the subscription's clientState, checked on every notification item.
    client_state: str | None = Field(default=None, max_length=64)
    resync_needed: bool = Field(default=False)
    # One upkeep at a time per monitor, across processes: a run holds it until then.
    upkeep_until: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    users: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class NotificationCertificate(SQLModel, table=True):
    """A key pair Graph encrypts resource data with; the private key encrypted at rest.

    Several are live during a rotation: new subscriptions get the newest, older ones
    keep decrypting until their subscriptions move on or they expire.
    """

    __tablename__ = "notification_certificates"

    id: str = Field(primary_key=True, max_length=36)
    certificate: str
    private_key: str
    thumbprint: str = Field(max_length=64)
    not_after: float = Field(sa_column=Column(Double, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


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
SCIM_USER_COUNTS = _table(ScimUserCount)
SCIM_USER_BLOCKS = _table(ScimUserBlock)
EVENTS = _table(Event)
CHANNELS = _table(Channel)
CONTACTS = _table(Contact)
CONVERSATIONS = _table(Conversation)
MESSAGES = _table(Message)
WEBHOOK_RECEIPTS = _table(WebhookReceipt)
ENDPOINTS = _table(Endpoint)
OUTBOX = _table(OutboxRow)
PRESENCE_USERS = _table(PresenceUser)
PRESENCE_STATES = _table(PresenceState)
PRESENCE_MONITORS = _table(PresenceMonitor)
NOTIFICATION_CERTIFICATES = _table(NotificationCertificate)


class SchemaCompatibility(SQLModel, table=True):
    """One row: the oldest code (its newest migration's revision) that can use this
    schema. Migrations that only add leave it; one that removes or changes what older code
    reads raises it to its own revision (decision 0017). A replica of older code stays
    ready on a newer schema whose row names a revision it knows."""

    __tablename__ = "schema_compatibility"

    id: int = Field(default=1, primary_key=True)
    oldest_code: str = Field(sa_column=Column(String(32), nullable=False))


class RateBudget(SQLModel, table=True):
    """A token bucket every replica takes from (PostgreSQL): the SCIM limit of an account,
    Graph's presence budget of a tenant's app. ``updated_at`` is the database's clock, so
    that replicas' clocks do not matter."""

    __tablename__ = "rate_budgets"

    key: str = Field(max_length=200, primary_key=True)
    tokens: float = Field(sa_column=Column(Double, nullable=False))
    updated_at: float = Field(sa_column=Column(Double, nullable=False))


RATE_BUDGETS = _table(RateBudget)


class ConsoleSession(SQLModel, table=True):
    """A browser signed in to the admin console, held on the server so that signing out
    ends it for good and every replica knows it. Only the SHA-256 of the session id the
    cookie carries is stored; ``csrf`` is the token each of its forms must send back."""

    __tablename__ = "console_sessions"

    digest: str = Field(max_length=64, primary_key=True)
    csrf: str = Field(max_length=64)
    subject: str = Field(max_length=200)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    seen_at: datetime = Field(default_factory=utcnow, index=True)
    # A secret to show once on the next page (encrypted), so that the page which shows it
    # is a GET after a redirect: reloading it shows nothing and changes nothing.
    reveal: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


CONSOLE_SESSIONS = _table(ConsoleSession)
