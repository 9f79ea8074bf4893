"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_name", sa.String(length=200), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("asset", sa.String(length=60), nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column(
            "properties_changed",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_account_seq", ["account_id", "seq"], unique=False)
        batch_op.create_index("ix_events_account_time", ["account_id", "occurred_at"], unique=False)

    op.create_table(
        "integrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("secret", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.create_index("uq_integrations_account_kind", ["account_id", "kind"], unique=True)

    op.create_table(
        "scim_credentials",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "scim_users",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("user_name", sa.String(length=512), nullable=False),
        sa.Column("user_name_key", sa.String(length=512), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=True),
        sa.Column("display_name", sa.String(length=512), nullable=True),
        sa.Column("given_name", sa.String(length=512), nullable=True),
        sa.Column("family_name", sa.String(length=512), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("extension", sa.String(length=64), nullable=True),
        sa.Column("login_id", sa.String(length=512), nullable=True),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("scim_users", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scim_users_account_external", ["account_id", "external_id"], unique=False
        )
        batch_op.create_index("ix_scim_users_account_pk", ["account_id", "pk"], unique=False)
        batch_op.create_index(
            "ix_scim_users_account_username", ["account_id", "user_name_key"], unique=False
        )

    op.create_table(
        "scim_claims",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("value_key", sa.String(length=512), nullable=False),
        sa.Column("user_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(["user_pk"], ["scim_users.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "kind", "value_key"),
    )
    with op.batch_alter_table("scim_claims", schema=None) as batch_op:
        batch_op.create_index("ix_scim_claims_user", ["user_pk"], unique=False)

    op.create_table(
        "scim_user_values",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("attribute", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=True),
        sa.Column("value", sa.String(length=512), nullable=False),
        sa.Column("value_key", sa.String(length=512), nullable=False),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["user_pk"], ["scim_users.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("scim_user_values", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scim_user_values_lookup", ["account_id", "attribute", "value_key"], unique=False
        )
        batch_op.create_index("ix_scim_user_values_user", ["user_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scim_user_values", schema=None) as batch_op:
        batch_op.drop_index("ix_scim_user_values_user")
        batch_op.drop_index("ix_scim_user_values_lookup")

    op.drop_table("scim_user_values")
    with op.batch_alter_table("scim_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_scim_claims_user")

    op.drop_table("scim_claims")
    with op.batch_alter_table("scim_users", schema=None) as batch_op:
        batch_op.drop_index("ix_scim_users_account_username")
        batch_op.drop_index("ix_scim_users_account_pk")
        batch_op.drop_index("ix_scim_users_account_external")

    op.drop_table("scim_users")
    op.drop_table("scim_credentials")
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_index("uq_integrations_account_kind")

    op.drop_table("integrations")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_account_time")
        batch_op.drop_index("ix_events_account_seq")

    op.drop_table("events")
    op.drop_table("accounts")
