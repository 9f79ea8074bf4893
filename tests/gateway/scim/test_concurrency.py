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

CONCURRENT = 20


def test_concurrent_creates_of_one_user_name_give_exactly_one_201(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    """20 simultaneous POSTs of one userName: one 201, nineteen 409 uniqueness, one row."""
    port = free_port()
    settings = make_settings(public_url=f"http://127.0.0.1:{port}", database_pool_size=10)
    account = accounts.create_account(db, name="Race", actor=OPERATOR_CLI)
    keys = accounts.generate_scim_keys(
        db, account_id=account["id"], actor=OPERATOR_CLI, public_url=settings.public_url
    )
    headers = {"Authorization": f"Bearer {keys.secret_token}"}

    def post(n: int) -> int:
        # Same userName, different emails: only the userName can clash.
        body = user_body(1, emails=[{"type": "work", "value": f"race{n}@contoso.example"}])
        with httpx2.Client(timeout=30) as http:
            return http.post(keys.tenant_url + "/Users", json=body, headers=headers).status_code

    with live_server(settings, port), ThreadPoolExecutor(CONCURRENT) as pool:
        statuses = list(pool.map(post, range(CONCURRENT)))
        with httpx2.Client(timeout=30) as http:
            listing = http.get(keys.tenant_url + "/Users", headers=headers).json()

    assert sorted(statuses) == [201] + [409] * (CONCURRENT - 1)
    assert listing["totalResults"] == 1
