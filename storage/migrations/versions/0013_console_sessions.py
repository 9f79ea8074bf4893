"""console sessions: browsers signed in to the admin console

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Only adds a table: the code at 0012 still uses this schema (decision 0017).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reveal", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_console_sessions_seen_at", "console_sessions", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_seen_at", table_name="console_sessions")
    op.drop_table("console_sessions")
