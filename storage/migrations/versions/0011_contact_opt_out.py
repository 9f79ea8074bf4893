"""when a contact opted out of a channel's messages

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

``contacts.opted_out_at``: set when the contact texts STOP (or the provider refuses a send
because they did), cleared when they text START. Only adds a nullable column: the code at
0010 still uses this schema (decision 0017).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contacts", sa.Column("opted_out_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("opted_out_at")
