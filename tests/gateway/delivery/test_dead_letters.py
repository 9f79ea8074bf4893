"""The dead-letter list, a page at a time, most recently failed first, and replays."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from gateway.accounts import service as accounts
from gateway.delivery import endpoints
from gateway.events.service import OPERATOR_CLI
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Handler, Settle
from storage.engine import Database
from storage.outbox import DEAD, PENDING, Claimed, Revived
from storage.tables import EVENTS, OUTBOX
from storage.transaction import Transaction
from tests.support.sync import run

MOMENT = 1_700_000_000.123456


def _bury(db: Database, account_id: str, failed_at: list[float], kind: str = "event") -> list[str]:
    """Dead letters that failed at these times; their ids, most recently failed first."""

    def work(tx: Transaction) -> list[tuple[float, int]]:
        buried = []
        for moment in failed_at:
            pk = tx.conn.execute(
                insert(OUTBOX)
                .values(
                    account_id=account_id,
                    kind=kind,
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


def _with_hook(on_replay: Any) -> Handler:
    async def deliver(_row: Claimed) -> Settle | None:
        return None

    return Handler(run=deliver, policy=RetryPolicy(attempts=1), on_replay=on_replay)


def _statuses(db: Database) -> list[str]:
    return run(db.query(lambda conn: list(conn.execute(select(OUTBOX.c.status)).scalars())))


def test_replay_tells_the_handler_of_each_replayed_letter_who_replayed_it(db: Database) -> None:
    """The hook of a letter's kind runs once per replayed letter of that kind, with the
    replay's actor; letters of a kind without a hook are replayed all the same."""
    account = run(accounts.create_account(db, name="Acme", actor=OPERATOR_CLI))
    hooked = _bury(db, account.id, [MOMENT, MOMENT + 1], kind="hooked")
    plain = _bury(db, account.id, [MOMENT + 2], kind="plain")
    heard: list[Revived] = []
    handlers = {"hooked": _with_hook(lambda _tx, row: heard.append(row))}
    replayed = run(
        endpoints.replay(
            db,
            handlers=handlers,
            account_id=account.id,
            ids=[],
            replay_all=True,
            actor=OPERATOR_CLI,
        )
    )
    assert replayed == 3
    assert sorted(str(row.pk) for row in heard) == sorted(hooked)
    assert {(row.kind, row.actor_name, row.actor_id) for row in heard} == {
        ("hooked", "Operator", "cli")
    }
    assert plain[0] not in {str(row.pk) for row in heard}
    assert _statuses(db) == [PENDING] * 3


def test_a_failing_replay_hook_leaves_every_letter_dead(db: Database) -> None:
    """The hooks run in the replay's transaction: one that fails undoes the whole replay,
    its event included."""
    account = run(accounts.create_account(db, name="Acme", actor=OPERATOR_CLI))
    ids = _bury(db, account.id, [MOMENT, MOMENT + 1], kind="hooked")

    def refuse(_tx: Transaction, row: Revived) -> None:
        raise RuntimeError(f"cannot take back {row.pk}")

    with pytest.raises(RuntimeError, match="cannot take back"):
        run(
            endpoints.replay(
                db,
                handlers={"hooked": _with_hook(refuse)},
                account_id=account.id,
                ids=ids,
                replay_all=False,
                actor=OPERATOR_CLI,
            )
        )
    assert _statuses(db) == [DEAD, DEAD]
    types = run(db.query(lambda conn: list(conn.execute(select(EVENTS.c.type)).scalars())))
    assert "outbox.replayed" not in types
