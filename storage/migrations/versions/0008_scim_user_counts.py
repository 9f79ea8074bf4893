"""users per account, counted by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

``scim_user_counts`` holds each account's number of users in 16 rows (by the user's
``pk``), kept by triggers on ``scim_users``: ``GET /Users`` reads its ``totalResults``
there instead of counting the account's users on every page. Triggers, not the code,
keep it, so the code at 0007 still uses this schema: its creates and deletes are counted
too (decision 0017). Existing users are counted here, in the same transaction that
creates the triggers (on PostgreSQL, creating a trigger holds off inserts until commit;
on SQLite the migrator holds the write lock).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows per account: a user is counted in row pk % 16.
_SQLITE = [
    """
    CREATE TRIGGER scim_users_counted AFTER INSERT ON scim_users BEGIN
      INSERT INTO scim_user_counts (account_id, shard, users, removed)
      VALUES (NEW.account_id, NEW.pk % 16, 1, 0)
      ON CONFLICT (account_id, shard) DO UPDATE SET users = users + 1;
    END
    """,
    """
    CREATE TRIGGER scim_users_uncounted AFTER DELETE ON scim_users BEGIN
      UPDATE scim_user_counts SET users = users - 1, removed = removed + 1
      WHERE account_id = OLD.account_id AND shard = OLD.pk % 16;
    END
    """,
]

_POSTGRESQL = [
    """
    CREATE FUNCTION scim_users_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO scim_user_counts (account_id, shard, users, removed)
        VALUES (NEW.account_id, NEW.pk % 16, 1, 0)
        ON CONFLICT (account_id, shard)
        DO UPDATE SET users = scim_user_counts.users + 1;
      ELSE
        -- An account being deleted may have lost its rows already: nothing to update.
        UPDATE scim_user_counts SET users = users - 1, removed = removed + 1
        WHERE account_id = OLD.account_id AND shard = OLD.pk % 16;
      END IF;
      RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER scim_users_counted AFTER INSERT OR DELETE ON scim_users
    FOR EACH ROW EXECUTE FUNCTION scim_users_count()
    """,
]


def upgrade() -> None:
    op.create_table(
        "scim_user_counts",
        sa.Column(
            "account_id",
            sa.String(length=36),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("users", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("removed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("account_id", "shard"),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in _POSTGRESQL if postgresql else _SQLITE:
        op.execute(statement)
    op.execute(
        """
        INSERT INTO scim_user_counts (account_id, shard, users, removed)
        SELECT account_id, pk % 16, count(*), 0 FROM scim_users
        GROUP BY account_id, pk % 16
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER scim_users_counted ON scim_users")
        op.execute("DROP FUNCTION scim_users_count()")
    else:
        op.execute("DROP TRIGGER scim_users_counted")
        op.execute("DROP TRIGGER scim_users_uncounted")
    op.drop_table("scim_user_counts")
