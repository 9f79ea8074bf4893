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
