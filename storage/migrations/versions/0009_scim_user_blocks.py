"""users per account and block of keys, counted by triggers

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

``scim_user_blocks`` counts each account's users per block of 8,192 consecutive ``pk``
values (``pk >> 13``), spread over 16 rows a block (``pk % 16``) as ``scim_user_counts``
is, so that concurrent creates of one account seldom wait for one row's lock on
PostgreSQL. ``GET /Users?startIndex=N`` for a page no earlier page led to sums the blocks
to find the one holding position N, then seeks into it: it steps over at most a block's
users instead of every user before the page. Triggers keep it, so the code at 0008 still
uses this schema (decision 0017). Existing users are counted in the same transaction that
creates the triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE = [
    """
    CREATE TRIGGER scim_users_blocked AFTER INSERT ON scim_users BEGIN
      INSERT INTO scim_user_blocks (account_id, block, shard, users)
      VALUES (NEW.account_id, NEW.pk >> 13, NEW.pk % 16, 1)
      ON CONFLICT (account_id, block, shard) DO UPDATE SET users = users + 1;
    END
    """,
    """
    CREATE TRIGGER scim_users_unblocked AFTER DELETE ON scim_users BEGIN
      UPDATE scim_user_blocks SET users = users - 1
      WHERE account_id = OLD.account_id AND block = OLD.pk >> 13 AND shard = OLD.pk % 16;
    END
    """,
]

_POSTGRESQL = [
    """
    CREATE FUNCTION scim_users_block() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO scim_user_blocks (account_id, block, shard, users)
        VALUES (NEW.account_id, NEW.pk >> 13, NEW.pk % 16, 1)
        ON CONFLICT (account_id, block, shard)
        DO UPDATE SET users = scim_user_blocks.users + 1;
      ELSE
        -- An account being deleted may have lost its rows already: nothing to update.
        UPDATE scim_user_blocks SET users = users - 1
        WHERE account_id = OLD.account_id AND block = OLD.pk >> 13 AND shard = OLD.pk % 16;
      END IF;
      RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER scim_users_blocked AFTER INSERT OR DELETE ON scim_users
    FOR EACH ROW EXECUTE FUNCTION scim_users_block()
    """,
]


def upgrade() -> None:
    op.create_table(
        "scim_user_blocks",
        sa.Column(
            "account_id",
            sa.String(length=36),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("users", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("account_id", "block", "shard"),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in _POSTGRESQL if postgresql else _SQLITE:
        op.execute(statement)
    op.execute(
        """
        INSERT INTO scim_user_blocks (account_id, block, shard, users)
        SELECT account_id, pk >> 13, pk % 16, count(*) FROM scim_users
        GROUP BY account_id, pk >> 13, pk % 16
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER scim_users_blocked ON scim_users")
        op.execute("DROP FUNCTION scim_users_block()")
    else:
        op.execute("DROP TRIGGER scim_users_blocked")
        op.execute("DROP TRIGGER scim_users_unblocked")
    op.drop_table("scim_user_blocks")
