"""outbox rows whose last attempt may have reached the other side

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Only adds a column with a default: the code at 0006 still uses this schema (it never
writes the column, and a row it claims reads as known; decision 0017).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "outbox",
        sa.Column("outcome_unknown", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("outcome_unknown")
