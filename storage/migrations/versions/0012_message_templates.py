"""templates: what a templated message sent, and a CM.com channel's templates

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

``messages.template``: the approved template an outbound message was sent as (its id,
name, language and variables); null for free-form text. ``channels.templates``: the
WhatsApp templates of a CM.com channel as its operator registered them (CM.com's
messaging API lists none). Only adds nullable columns: the code at 0011 still uses this
schema (decision 0017).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("messages", sa.Column("template", JSON_TYPE))
    op.add_column("channels", sa.Column("templates", JSON_TYPE))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("template")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("templates")
