"""presence

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_target", ["kind", "target_id", "status"], unique=False)
    op.create_table(
        "notification_certificates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("not_after", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "presence_monitors",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("upn", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("auth_state", sa.String(length=64), nullable=True),
        sa.Column("auth_expires_at", sa.Double(), nullable=True),
        sa.Column("subscription_id", sa.String(length=64), nullable=True),
        sa.Column("subscription_expires_at", sa.Double(), nullable=True),
        sa.Column("subscription_hash", sa.String(length=64), nullable=True),
        sa.Column("certificate_id", sa.String(length=36), nullable=True),
        sa.Column("client_state", sa.String(length=64), nullable=True),
        sa.Column("resync_needed", sa.Boolean(), nullable=False),
        sa.Column("upkeep_until", sa.Double(), nullable=True),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("presence_monitors", schema=None) as batch_op:
        batch_op.create_index("ix_presence_monitors_state", ["auth_state"], unique=False)
        batch_op.create_index(
            "ix_presence_monitors_subscription", ["subscription_id"], unique=False
        )
        batch_op.create_index(
            "uq_presence_monitors_account_upn", ["account_id", "upn"], unique=True
        )

    op.create_table(
        "presence_users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=512), nullable=False),
        sa.Column("teams_user_id", sa.String(length=64), nullable=True),
        sa.Column("looked_up_at", sa.Double(), nullable=True),
        sa.Column("monitor_id", sa.String(length=36), nullable=True),
        sa.Column(
            "written",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("presence_users", schema=None) as batch_op:
        batch_op.create_index("ix_presence_users_monitor", ["monitor_id"], unique=False)
        batch_op.create_index(
            "ix_presence_users_teams", ["account_id", "teams_user_id"], unique=False
        )
        batch_op.create_index(
            "uq_presence_users_account_email", ["account_id", "email"], unique=True
        )

    op.create_table(
        "presence_states",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("availability", sa.String(length=40), nullable=False),
        sa.Column("activity", sa.String(length=60), nullable=False),
        sa.Column(
            "raw",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["presence_users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "source"),
    )


def downgrade() -> None:
    op.drop_table("presence_states")
    with op.batch_alter_table("presence_users", schema=None) as batch_op:
        batch_op.drop_index("uq_presence_users_account_email")
        batch_op.drop_index("ix_presence_users_teams")
        batch_op.drop_index("ix_presence_users_monitor")

    op.drop_table("presence_users")
    with op.batch_alter_table("presence_monitors", schema=None) as batch_op:
        batch_op.drop_index("uq_presence_monitors_account_upn")
        batch_op.drop_index("ix_presence_monitors_subscription")
        batch_op.drop_index("ix_presence_monitors_state")

    op.drop_table("presence_monitors")
    op.drop_table("notification_certificates")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_target")
