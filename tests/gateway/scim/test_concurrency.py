"""Uniqueness under concurrent requests, against a live server on each backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from sqlalchemy import func, select

from gateway.accounts import service as accounts
from gateway.events.service import OPERATOR_CLI
from gateway.scim import service
from gateway.scim.parsing import new_user_document
from gateway.scim.rules import record_of
from gateway.scim.service import Tenant as ScimTenant
from gateway.settings import Settings
from storage.engine import Database
from storage.tables import EVENTS, utcnow
from tests.conftest import Tenant, user_body
from tests.support.live import free_port, live_server
from tests.support.sync import run

CONCURRENT = 20
ROUNDS = 3


def test_concurrent_creates_of_one_user_name_give_exactly_one_201(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    """20 simultaneous POSTs of one userName: one 201, nineteen 409 uniqueness, one row.

    Three rounds, since a race shows itself only sometimes.
    """
    port = free_port()
    settings = make_settings(public_url=f"http://127.0.0.1:{port}", database_pool_size=10)
    account = run(accounts.create_account(db, name="Race", actor=OPERATOR_CLI))
    keys = run(
        accounts.generate_scim_keys(
            db, account_id=account.id, actor=OPERATOR_CLI, public_url=settings.public_url
        )
    )
    headers = {"Authorization": f"Bearer {keys.secret_token}"}

    def post(job: tuple[int, int]) -> int:
        # Same userName within a round, different emails: only the userName can clash.
        round_, n = job
        body = user_body(
            round_, emails=[{"type": "work", "value": f"race{round_}-{n}@contoso.example"}]
        )
        with httpx2.Client(timeout=30) as http:
            return http.post(keys.tenant_url + "/Users", json=body, headers=headers).status_code

    with live_server(settings, port), ThreadPoolExecutor(CONCURRENT) as pool:
        rounds = [
            sorted(pool.map(post, [(round_, n) for n in range(CONCURRENT)]))
            for round_ in range(ROUNDS)
        ]
        with httpx2.Client(timeout=30) as http:
            listing = http.get(keys.tenant_url + "/Users", headers=headers).json()

    assert rounds == [[201] + [409] * (CONCURRENT - 1)] * ROUNDS
    assert listing["totalResults"] == ROUNDS


def test_a_create_run_again_after_its_commit_is_one_user_and_one_event(
    tenant: Tenant, db: Database
) -> None:
    """A one-statement create whose answer was lost after its commit runs again on a new
    connection (PostgreSQL): the second run finds the user it made, and answers as if it
    were the first; the user and its event are stored once."""
    if not db.writes_in_one_statement:
        pytest.skip("SQLite's creates commit through transact, which never runs a unit twice")
    scim = ScimTenant(tenant.account_id, tenant.tenant_url)
    record = record_of(new_user_document(user_body(7), scim.users_url))
    user_id, now = str(uuid.uuid4()), utcnow()
    for _ in range(2):
        run(service._create_in_one_statement(db, scim, user_id, record, now))
    [user] = tenant.filter('userName eq "user7@contoso.example"')["Resources"]
    assert user["id"] == user_id
    with db.engine.connect() as conn:
        created = conn.execute(
            select(func.count()).where(
                EVENTS.c.type == "user.created", EVENTS.c.asset_id == user_id
            )
        ).scalar_one()
    assert created == 1
