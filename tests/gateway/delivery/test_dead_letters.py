"""The dead-letter list, a page at a time, most recently failed first."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import insert
from starlette.testclient import TestClient

from gateway.accounts import service as accounts
from gateway.events.service import OPERATOR_CLI
from storage.engine import Database
from storage.outbox import DEAD
from storage.tables import OUTBOX
from storage.transaction import Transaction
from tests.support.sync import run

MOMENT = 1_700_000_000.123456


def _bury(db: Database, account_id: str, failed_at: list[float]) -> list[str]:
    """Dead letters that failed at these times; their ids, most recently failed first."""

    def work(tx: Transaction) -> list[tuple[float, int]]:
        buried = []
        for moment in failed_at:
            pk = tx.conn.execute(
                insert(OUTBOX)
                .values(
                    account_id=account_id,
                    kind="event",
                    target_id="endpoint",
                    payload={},
                    status=DEAD,
                    attempts=8,
                    available_at=moment,
                    last_error="HTTP 500",
                    created_at=moment - 60,
                    updated_at=moment,
                )
                .returning(OUTBOX.c.pk)
            ).scalar_one()
            buried.append((moment, pk))
        return buried

    return [str(pk) for _moment, pk in sorted(run(db.transact(work)), reverse=True)]


def _list(client: TestClient, account_id: str, headers: dict[str, str], **params: Any) -> Any:
    return client.get(f"/api/v1/accounts/{account_id}/dead-letters", params=params, headers=headers)


def test_pages_list_every_dead_letter_once_in_order(
    client: TestClient, db: Database, admin_headers: dict[str, str]
) -> None:
    """Following next_cursor three at a time lists each letter exactly once, most recently
    failed first, also where letters failed at the same moment or less than a microsecond
    apart; the last page has no cursor."""
    account = run(accounts.create_account(db, name="Acme", actor=OPERATOR_CLI))
    closest = math.nextafter(MOMENT, math.inf)
    failed_at = [
        *[MOMENT] * 4,
        *[closest] * 2,
        math.nextafter(closest, math.inf),
        MOMENT + 0.000001,
        MOMENT - 5,
        math.nextafter(MOMENT - 5, 0),
        MOMENT - 3600,
    ]
    expected = _bury(db, account.id, failed_at)
    listed: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} if cursor is None else {"limit": 3, "before": cursor}
        answer = _list(client, account.id, admin_headers, **params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= 3
        listed.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < len(failed_at), "the pages do not end"
    assert listed == expected
    assert pages == 4


def test_a_cursor_the_api_did_not_return_is_400(
    client: TestClient, db: Database, admin_headers: dict[str, str]
) -> None:
    """A malformed ``before`` is refused, naming the parameter; nothing is listed."""
    account = run(accounts.create_account(db, name="Acme", actor=OPERATOR_CLI))
    _bury(db, account.id, [MOMENT])
    for bad in ("nope", "1700000000.5", "1e9_12", "-1.5_3", "1700000000.5_"):
        answer = _list(client, account.id, admin_headers, before=bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert "before" in answer.json()["detail"]


def test_a_cursor_past_every_letter_ends_the_list(
    client: TestClient, db: Database, admin_headers: dict[str, str]
) -> None:
    """A well-formed cursor older than every letter answers an empty last page."""
    account = run(accounts.create_account(db, name="Acme", actor=OPERATOR_CLI))
    _bury(db, account.id, [MOMENT])
    answer = _list(client, account.id, admin_headers, before="1000.25_1")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"items": [], "next_cursor": None}
