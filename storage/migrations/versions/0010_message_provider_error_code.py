"""the provider's own error code of a failed message

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

``error_code`` says what failed in the gateway's words where it knows the case
(``window_closed`` for WhatsApp's 24-hour window, whichever provider refused), and
``provider_error_code`` keeps the provider's code (Twilio's 63016, CM.com's 62). Only adds
a nullable column: the code at 0009 still uses this schema (decision 0017).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("provider_error_code", sa.String(length=40)))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("provider_error_code")
