"""Storage contract, run on each backend: constraints hold in the database itself."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from gateway.accounts import service as accounts
from gateway.events.service import OPERATOR_CLI
from gateway.security import SecretBox, generate_key
from storage.engine import Database
from storage.tables import ACCOUNTS, INTEGRATIONS, SCIM_CLAIMS, SCIM_USERS, utcnow
from storage.transaction import Transaction
from tests.support.sync import run

claims = SCIM_CLAIMS
users = SCIM_USERS
integrations = INTEGRATIONS
account_table = ACCOUNTS


def make_user(db: Database, account_id: str, name: str) -> int:
    with db.engine.begin() as conn:
        pk = conn.execute(
            insert(users)
            .values(
                id=str(uuid.uuid4()),
                account_id=account_id,
                user_name=name,
                user_name_key=name,
                active=True,
                document={"userName": name},
                version=1,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            .returning(users.c.pk)
        ).scalar_one()
    return int(pk)


def test_a_claimed_value_cannot_be_claimed_twice_in_one_account(db: Database) -> None:
    """The primary key of scim_claims refuses a second holder, whatever the code does."""
    account = run(accounts.create_account(db, name="A", actor=OPERATOR_CLI)).id
    first, second = make_user(db, account, "a"), make_user(db, account, "b")
    with db.engine.begin() as conn:
        conn.execute(
            insert(claims).values(account_id=account, kind="email", value_key="x@y", user_pk=first)
        )
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(
            insert(claims).values(account_id=account, kind="email", value_key="x@y", user_pk=second)
        )
    other = run(accounts.create_account(db, name="B", actor=OPERATOR_CLI)).id
    third = make_user(db, other, "c")
    with db.engine.begin() as conn:
        conn.execute(
            insert(claims).values(account_id=other, kind="email", value_key="x@y", user_pk=third)
        )


def test_a_failed_write_leaves_nothing_behind(db: Database) -> None:
    """A transaction that fails half-way commits none of its statements."""
    account = run(accounts.create_account(db, name="A", actor=OPERATOR_CLI)).id
    before = make_user(db, account, "a")

    def fail_half_way(tx: Transaction) -> None:
        tx.conn.execute(
            insert(account_table).values(
                id="new-account", name="N", created_at=utcnow(), updated_at=utcnow()
            )
        )
        for _ in range(2):
            tx.conn.execute(
                insert(claims).values(
                    account_id=account, kind="userName", value_key="a", user_pk=before
                )
            )

    with pytest.raises(IntegrityError):
        run(db.transact(fail_half_way))
    with db.engine.connect() as conn:
        assert (
            conn.execute(
                select(account_table.c.id).where(account_table.c.id == "new-account")
            ).first()
            is None
        )


def test_integrations_hold_every_kind_with_encrypted_secrets(db: Database) -> None:
    """Twilio, CM.com, Teams and Office 365 configurations fit the model, secrets encrypted."""
    account = run(accounts.create_account(db, name="A", actor=OPERATOR_CLI)).id
    box = SecretBox([SecretStr(generate_key())])
    configs = {
        "twilio": ({"account_sid": "AC123"}, "auth-token"),
        "cmcom": ({"channels": ["WhatsApp"]}, "product-token"),
        "microsoft_teams": ({"tenant_id": "t", "client_id": "c"}, "client-secret"),
        "office365": ({"tenant_id": "t", "consent": "granted"}, "refresh-token"),
    }
    with db.engine.begin() as conn:
        for kind, (config, secret) in configs.items():
            conn.execute(
                insert(integrations).values(
                    id=str(uuid.uuid4()),
                    account_id=account,
                    kind=kind,
                    status="configured",
                    config=config,
                    secret=box.encrypt(secret),
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
    with db.engine.connect() as conn:
        rows = {r.kind: r for r in conn.execute(select(integrations)).all()}
    for kind, (config, secret) in configs.items():
        assert rows[kind].config == config
        assert secret not in rows[kind].secret
        assert box.decrypt(rows[kind].secret) == secret
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(
            insert(integrations).values(
                id=str(uuid.uuid4()),
                account_id=account,
                kind="twilio",
                status="x",
                config={},
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )


def test_database_errors_do_not_quote_bound_parameters(db: Database) -> None:
    """SQLAlchemy does not append the statement's bound values to an error's text."""
    account = run(accounts.create_account(db, name="A", actor=OPERATOR_CLI)).id
    pk = make_user(db, account, "a")
    row = {
        "account_id": account,
        "kind": "email",
        "value_key": "secret@contoso.example",
        "user_pk": pk,
    }
    with db.engine.begin() as conn:
        conn.execute(insert(claims).values(**row))

    def clash() -> None:
        with db.engine.begin() as conn:
            conn.execute(insert(claims).values(**row))

    with pytest.raises(IntegrityError) as caught:
        clash()
    assert "[parameters:" not in str(caught.value)
    assert "parameters hidden" in str(caught.value)


def test_an_update_computed_from_an_old_version_writes_nothing(db: Database) -> None:
    """update_user only lands on the version it was computed from."""
    from gateway.scim import repository
    from gateway.scim.rules import UserRecord

    account = run(accounts.create_account(db, name="A", actor=OPERATOR_CLI)).id
    pk = make_user(db, account, "a")
    record = UserRecord(
        {"userName": "b"},
        "b",
        "b",
        None,
        "B",
        None,
        None,
        True,
        None,
        None,
        claims={("userName", "b")},
    )
    with db.engine.begin() as conn:
        stale = repository.update_user(conn, account, pk, version=7, record=record, now=utcnow())
    with db.engine.begin() as conn:
        fresh = repository.update_user(conn, account, pk, version=1, record=record, now=utcnow())
    with db.engine.connect() as conn:
        stored = conn.execute(select(users.c.user_name, users.c.version)).one()
    assert (stale, fresh) == (False, True)
    assert tuple(stored) == ("b", 2)
