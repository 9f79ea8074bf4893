"""Paging through all of an account's users: totals from the counts the triggers keep, and
each page found from where the one before ended, exactly as an OFFSET would find it."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import text

from storage.engine import Database
from storage.migrate import alembic_config, upgrade
from tests.conftest import Tenant, user_body

PAGE = 10


def create(tenant: Tenant, n: int) -> str:
    response = tenant.post("/Users", user_body(n))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def page(tenant: Tenant, start: int, count: int = PAGE) -> dict[str, Any]:
    response = tenant.get("/Users", params={"startIndex": start, "count": count})
    assert response.status_code == 200, response.text
    return dict(response.json())


def ids(listed: dict[str, Any]) -> list[str]:
    return [user["id"] for user in listed.get("Resources", [])]


def test_paging_forward_lists_every_user_once_in_creation_order(tenant: Tenant) -> None:
    """Pages of 10 through 35 users, as Entra reads them: all 35, in order, the total on each."""
    created = [create(tenant, n) for n in range(35)]
    seen: list[str] = []
    for start in range(1, 36, PAGE):
        listed = page(tenant, start)
        assert listed["totalResults"] == 35
        seen += ids(listed)
    assert seen == created
    # Again from the start, and out of order: the same pages.
    assert ids(page(tenant, 21)) == created[20:30]
    assert ids(page(tenant, 1)) == created[:10]
    assert ids(page(tenant, 14, 3)) == created[13:16]


def test_a_removal_between_pages_moves_later_users_as_an_offset_does(tenant: Tenant) -> None:
    """After user 5 of 30 is deleted, startIndex 11 is the 12th user created: a page that
    seeks from where page 1 ended before the removal would start one user late."""
    created = [create(tenant, n) for n in range(30)]
    assert ids(page(tenant, 1)) == created[:10]
    assert tenant.delete(f"/Users/{created[4]}").status_code == 204
    remaining = created[:4] + created[5:]
    listed = page(tenant, 11)
    assert listed["totalResults"] == 29
    assert ids(listed) == remaining[10:20]
    assert ids(page(tenant, 21)) == remaining[20:29]


def test_users_created_after_a_page_was_read_go_at_the_end(tenant: Tenant) -> None:
    """New users move nobody: the next page continues where the last ended."""
    created = [create(tenant, n) for n in range(15)]
    assert ids(page(tenant, 1)) == created[:10]
    created += [create(tenant, n) for n in range(15, 20)]
    listed = page(tenant, 11)
    assert (listed["totalResults"], ids(listed)) == (20, created[10:20])


def test_start_beyond_the_last_user_is_an_empty_page_with_the_total(tenant: Tenant) -> None:
    for n in range(3):
        create(tenant, n)
    listed = page(tenant, 4)
    assert (listed["totalResults"], listed["itemsPerPage"], ids(listed)) == (3, 0, [])


def test_the_total_counts_users_however_they_were_written(tenant: Tenant, db: Database) -> None:
    """Users that existed before the counts (revision 0007) are counted by the migration;
    rows another program deletes are counted out by the triggers."""
    for n in range(6):
        create(tenant, n)
    command.downgrade(alembic_config(db.engine), "0007")
    upgrade(db.engine)
    assert page(tenant, 1)["totalResults"] == 6
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM scim_users WHERE pk = (SELECT min(pk) FROM scim_users)"))
    assert page(tenant, 1)["totalResults"] == 5


def test_a_page_asked_for_alone_far_in_is_found_through_the_blocks_of_keys(
    tenant: Tenant, db: Database
) -> None:
    """9,000 users whose keys span 44 blocks (copies made by SQL, 40 keys apart, as a
    large account's users interleaved with others' are): a page asked for alone, with no
    earlier page within a block's users of it, is the page an OFFSET finds, also after
    removals, and so are pages near the start and pages found from a block's remembered
    start."""
    create(tenant, 0)
    with db.engine.begin() as conn:
        template = conn.execute(text("SELECT * FROM scim_users")).mappings().one()
        copied = [c for c in template if c not in ("pk", "id", "user_name", "user_name_key")]
        names = ", ".join(copied)
        conn.execute(
            text(
                f"INSERT INTO scim_users (pk, id, user_name, user_name_key, {names}) "
                f"SELECT :pk, :id, :name, :name, {names} FROM scim_users WHERE pk = :template"
            ),
            [
                {
                    "pk": template["pk"] + 40 * n,
                    "id": f"00000000-0000-0000-0000-{n:012d}",
                    "name": f"copy{n}@example.com",
                    "template": template["pk"],
                }
                for n in range(1, 9_000)
            ],
        )

    def by_offset() -> list[str]:
        with db.engine.connect() as conn:
            return list(conn.execute(text("SELECT id FROM scim_users ORDER BY pk")).scalars())

    everyone = by_offset()
    for start in (8_990, 8_400, 3_000, 8_195, 3, 8_999, 9_000):
        listed = page(tenant, start, 5)
        assert listed["totalResults"] == 9_000
        assert ids(listed) == everyone[start - 1 : start + 4], start
    with db.engine.begin() as conn:
        gone = {"a": everyone[10], "b": everyone[8_500]}
        conn.execute(text("DELETE FROM scim_users WHERE id IN (:a, :b)"), gone)
    everyone = by_offset()
    for start in (8_700, 8_300, 9):
        assert ids(page(tenant, start, 5)) == everyone[start - 1 : start + 4], start


def test_the_blocks_count_users_however_they_were_written(tenant: Tenant, db: Database) -> None:
    """Users that existed before the blocks (revision 0008) are counted by the migration,
    and the triggers count later creates and deletes, in the user's block of keys."""
    created = [create(tenant, n) for n in range(5)]
    command.downgrade(alembic_config(db.engine), "0008")
    upgrade(db.engine)
    create(tenant, 5)
    assert tenant.delete(f"/Users/{created[0]}").status_code == 204
    with db.engine.connect() as conn:
        counted = conn.execute(
            text(
                "SELECT block, sum(users) FROM scim_user_blocks"
                " GROUP BY block HAVING sum(users) > 0"
            )
        ).all()
        actual = conn.execute(
            text("SELECT pk / 8192, count(*) FROM scim_users GROUP BY pk / 8192")
        ).all()
    assert sorted((int(b), int(n)) for b, n in counted) == sorted(
        (int(b), int(n)) for b, n in actual
    )
    assert sum(int(n) for _, n in counted) == 5
