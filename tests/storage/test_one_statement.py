"""Writes of one statement (PostgreSQL): a change, its event and its outbox rows as CTEs of
one statement, which commits whole or not at all, and enqueues once as
``Transaction.enqueue_once`` does."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import BindParameter, Boolean, bindparam, func, select, update

from storage import outbox
from storage.engine import Database, make_engine
from storage.errors import DatabaseBusy
from storage.one_statement import MOMENT, enqueue_once_ctes, enqueued, event_ctes, event_params
from storage.prepared import Prepared
from storage.tables import ACCOUNTS, EVENTS, OUTBOX
from storage.transaction import NewEvent, Transaction
from tests.storage.test_outbox import _account
from tests.support.databases import close_every_connection
from tests.support.sync import run

KIND = "test.job"


def _event(account_id: str) -> NewEvent:
    return NewEvent(
        id=str(uuid.uuid4()),
        account_id=account_id,
        actor_name="t",
        actor_id=None,
        action="Update",
        category="Test",
        asset="Account",
        asset_id=account_id,
        type="account.renamed",
        properties_changed=["name"],
        details={"name": "renamed"},
    )


def _rename() -> Prepared:
    """Rename an account, record its event, and enqueue its job once if ``wanted``."""
    account: BindParameter[str] = bindparam("account_id")
    renamed = (
        update(ACCOUNTS)
        .where(ACCOUNTS.c.id == account)
        .values(name=bindparam("name"))
        .returning(ACCOUNTS.c.id)
        .cte("renamed")
    )
    event = event_ctes()
    job = enqueue_once_ctes(
        "job",
        account_id=account,
        kind=KIND,
        target_id=account,
        when=bindparam("wanted", type_=Boolean),
    )
    return Prepared(
        select(func.count(renamed.c.id).label("renamed"), enqueued(event[-1], job[-1])).add_cte(
            *event, *job
        )
    )


RENAME = _rename()


def _params(account_id: str, *, name: str = "renamed", wanted: bool, at: float) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "name": name,
        "wanted": wanted,
        "job_at": at,
        MOMENT: time.time(),
        **event_params(_event(account_id)),
    }


def _rows(db: Database, kind: str) -> list[Any]:
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                select(OUTBOX.c.pk, OUTBOX.c.target_id, OUTBOX.c.available_at)
                .where(OUTBOX.c.kind == kind)
                .order_by(OUTBOX.c.pk)
            )
        )


def _events(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(select(EVENTS.c.type, EVENTS.c.tx_order)))


def _name(db: Database, account_id: str) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.execute(select(ACCOUNTS.c.name).where(ACCOUNTS.c.id == account_id)).scalar_one()
        )


def test_the_change_its_event_and_one_delivery_per_enabled_endpoint_commit_together(
    postgres_db: Database,
) -> None:
    """One statement: the account renamed, its event with the transaction's order, a
    delivery for each enabled endpoint, and this process's outbox worker woken."""
    db = postgres_db
    woken: list[bool] = []
    db.outbox_listener = lambda: woken.append(True)
    account_id = _account(db, {"e-on": "enabled", "e-off": "disabled", "e-on2": "enabled"})
    [row] = run(db.write_statement(RENAME, _params(account_id, wanted=False, at=time.time())))
    assert (row.renamed, row.enqueued) == (1, 2)
    assert woken == [True]
    assert _name(db, account_id) == "renamed"
    [(kind, tx_order)] = _events(db)
    assert kind == "account.renamed"
    assert tx_order is not None
    assert sorted(target for _pk, target, _at in _rows(db, "event")) == ["e-on", "e-on2"]


def test_a_part_that_fails_leaves_nothing_of_the_statement(postgres_db: Database) -> None:
    """The event and the job are not written when the change is refused."""
    db = postgres_db
    account_id = _account(db, {"e-on": "enabled"})
    params = _params(account_id, name=None, wanted=True, at=time.time())  # type: ignore[arg-type]
    with pytest.raises(Exception, match="null value"):
        run(db.write_statement(RENAME, params))
    assert _name(db, account_id) == "a"
    assert _events(db) == []
    assert _rows(db, "event") == []
    assert _rows(db, KIND) == []


def test_a_job_is_enqueued_once_as_transaction_enqueue_once_does(postgres_db: Database) -> None:
    """Not when unwanted; then one row, made due sooner but never later by the next
    writes; a row being worked on does not count, and the change gets a row of its own."""
    db = postgres_db
    account_id = _account(db, {})
    now = time.time()

    def write(at: float, *, wanted: bool = True) -> int:
        [row] = run(db.write_statement(RENAME, _params(account_id, wanted=wanted, at=at)))
        return int(row.enqueued)

    assert write(now + 60, wanted=False) == 0
    assert _rows(db, KIND) == []
    assert write(now + 60) == 1
    [(first, _target, at)] = _rows(db, KIND)
    assert at == pytest.approx(now + 60)
    assert write(now + 30) == 0
    assert write(now + 90) == 0
    assert [(pk, at) for pk, _t, at in _rows(db, KIND)] == [(first, pytest.approx(now + 30))]
    claimed = run(
        db.transact(
            lambda tx: outbox.claim(tx.conn, owner="w", moment=now + 31, lease=30, limit=10)
        )
    )
    assert [c.pk for c in claimed] == [first]
    assert write(now + 60) == 1
    assert [pk for pk, _t, _at in _rows(db, KIND)][:1] == [first]
    assert len(_rows(db, KIND)) == 2


def test_a_job_row_matches_what_transact_enqueues(postgres_db: Database) -> None:
    """The row a one-statement write adds is the one ``enqueue_once`` adds: the same
    columns but its key and times."""
    db = postgres_db
    account_id = _account(db, {})
    run(db.write_statement(RENAME, _params(account_id, wanted=True, at=time.time() + 5)))

    def through_transact(tx: Transaction) -> None:
        tx.enqueue_once(account_id=account_id, kind="other", target_id=account_id, delay=5)

    run(db.transact(through_transact))
    columns = [c for c in OUTBOX.c if c.name not in ("pk", "kind", "available_at")]
    columns = [c for c in columns if c.name not in ("created_at", "updated_at")]
    with db.engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(OUTBOX.c.pk)).all()
    assert rows[0] == rows[1]


def test_a_row_lock_held_past_the_lock_timeout_makes_the_write_busy(
    postgres_db: Database,
) -> None:
    """The connections of one-statement writes wait the lock timeout too, then the write
    is busy, having written nothing."""
    db = postgres_db
    account_id = _account(db, {"e-on": "enabled"})
    with db.engine.connect() as holder, holder.begin():
        holder.execute(select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == account_id).with_for_update())
        started = time.monotonic()
        with pytest.raises(DatabaseBusy):
            run(db.write_statement(RENAME, _params(account_id, wanted=True, at=time.time())))
        assert time.monotonic() - started < 5
    assert _name(db, account_id) == "a"
    assert _events(db) == []
    assert _rows(db, KIND) == []


def test_a_write_after_a_restart_runs_on_a_new_connection_once(postgres_db: Database) -> None:
    """Every connection ended (a restart) between two writes of one event loop: the second
    runs on a new connection and is stored once."""
    db = postgres_db
    account_id = _account(db, {})

    async def both() -> None:
        await db.write_statement(RENAME, _params(account_id, name="first", wanted=False, at=0))
        assert close_every_connection(db) >= 1
        await db.write_statement(RENAME, _params(account_id, name="second", wanted=False, at=0))

    asyncio.run(both())
    db.engine.dispose()  # this test's own reading connections were ended too
    assert _name(db, account_id) == "second"
    assert [kind for kind, _order in _events(db)] == ["account.renamed", "account.renamed"]


def test_sqlite_has_no_one_statement_writes(tmp_path: Any) -> None:
    """SQLite has no data-modifying CTEs: its units go through ``transact``."""
    db = Database(make_engine(f"sqlite:///{tmp_path / 'one.db'}"))
    try:
        assert not db.writes_in_one_statement
        with pytest.raises(RuntimeError, match="transact"):
            run(db.write_statement(RENAME, {}))
    finally:
        db.dispose()
