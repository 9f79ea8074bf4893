"""Uniqueness under concurrent requests, against a live server on each backend."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2

from gateway.accounts import service as accounts
from gateway.events.service import OPERATOR_CLI
from gateway.settings import Settings
from storage.engine import Database
from tests.conftest import user_body
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
