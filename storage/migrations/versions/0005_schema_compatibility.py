"""schema compatibility

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

From this revision on, the schema says which code can use it (decision 0017): this one
only adds a table, so code at 0004 still can.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.migrate import require_code

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schema_compatibility",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("oldest_code", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    require_code("0004")


def downgrade() -> None:
    op.drop_table("schema_compatibility")
