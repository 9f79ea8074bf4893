"""Bearer tokens as sent: the operator token, SCIM tokens, and clients that keep failing."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from gateway.accounts import service as accounts
from gateway.app import create_app
from gateway.events.service import OPERATOR_CLI
from gateway.settings import Settings
from storage.engine import Database
from tests.conftest import ADMIN_TOKEN, FAILURE_BURST, PUBLIC_URL, new_tenant
from tests.support.live import free_port, live_server
from tests.support.sync import run


def _accounts(client: TestClient, authorization: bytes) -> int:
    return client.get("/api/v1/accounts", headers={"Authorization": authorization}).status_code


def _metric(client: TestClient, surface: str, outcome: str) -> float:
    text = client.get("/metrics").text
    line = f'cloudlink_gateway_auth_failures_total{{outcome="{outcome}",surface="{surface}"}}'
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


@pytest.mark.parametrize("blank", ["", "   ", "\xa0", "\t\n"])
def test_an_empty_admin_token_disables_the_admin_api(
    make_settings: Callable[..., Settings], blank: str
) -> None:
    """GATEWAY_ADMIN_TOKEN set to nothing but blanks means no token: the API stays shut,
    however the presented token is padded."""
    settings = make_settings(admin_token=blank)
    assert settings.admin_token is None
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as client:
        for presented in (b"Bearer \xa0", b"Bearer \x85", b"Bearer ", b"Bearer  "):
            response = client.post(
                "/api/v1/accounts", json={"name": "Intruder"}, headers={"Authorization": presented}
            )
            assert response.status_code == 401
            assert "disabled" in response.json()["detail"]


def test_an_admin_token_shorter_than_32_characters_is_refused_at_start(
    make_settings: Callable[..., Settings],
) -> None:
    """A short token stops the process with the rule, and the value is not echoed."""
    with pytest.raises(ValidationError, match="at least 32 characters") as raised:
        make_settings(admin_token="short-token-0123456789")
    assert "short-token" not in str(raised.value)
    assert make_settings(admin_token=" " + "t" * 32 + "\n").admin_token is not None


def test_the_presented_token_is_compared_as_the_bytes_sent(client: TestClient) -> None:
    """Padding or a look-alike byte is a wrong token; only the scheme's case is folded."""
    token = ADMIN_TOKEN.encode()
    assert _accounts(client, b"Bearer " + token) == 200
    assert _accounts(client, b"bEaReR " + token) == 200
    assert _accounts(client, b"Bearer " + token + b"\xa0") == 401
    assert _accounts(client, b"Bearer \xa0" + token) == 401
    assert _accounts(client, b"Bearer " + token.upper()) == 401
    assert _accounts(client, b"Basic " + token) == 401


def test_a_client_that_keeps_failing_is_throttled_and_counted(settings: Settings) -> None:
    """After a burst of wrong tokens a client gets 429 with Retry-After, even with the right
    token; another client is unaffected; the metric counts both outcomes."""
    app = create_app(settings)
    right = b"Bearer " + ADMIN_TOKEN.encode()
    with (
        TestClient(app, base_url=PUBLIC_URL, client=("192.0.2.7", 1000)) as attacker,
        TestClient(app, base_url=PUBLIC_URL, client=("192.0.2.8", 1000)) as operator,
    ):
        refused = [_accounts(attacker, b"Bearer guess-%d" % n) for n in range(FAILURE_BURST)]
        assert refused == [401] * FAILURE_BURST
        throttled = attacker.get("/api/v1/accounts", headers={"Authorization": right})
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert _accounts(operator, right) == 200
        assert _metric(operator, "admin", "refused") == FAILURE_BURST
        assert _metric(operator, "admin", "throttled") == 1


def test_requests_without_a_token_guess_nothing_and_are_not_held_back(
    client: TestClient,
) -> None:
    """Many calls that send no token are 401 each time, and the right token still works."""
    assert {client.get("/api/v1/accounts").status_code for _ in range(3 * FAILURE_BURST)} == {401}
    assert _accounts(client, b"Bearer " + ADMIN_TOKEN.encode()) == 200


def test_the_limit_on_wrong_tokens_can_be_turned_off(
    make_settings: Callable[..., Settings],
) -> None:
    """GATEWAY_AUTH_FAILURE_BURST=0: wrong tokens are refused, never held back."""
    settings = make_settings(auth_failure_burst=0)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as client:
        assert {_accounts(client, b"Bearer wrong") for _ in range(3 * FAILURE_BURST)} == {401}
        assert _accounts(client, b"Bearer " + ADMIN_TOKEN.encode()) == 200


def test_scim_tokens_are_compared_as_sent_and_failures_throttled_per_tenant(
    client: TestClient, db: Database
) -> None:
    """A padded SCIM token is refused; a client that keeps failing on one tenant URL is
    throttled there and nowhere else."""
    tenant_a = new_tenant(client, db, "A")
    tenant_b = new_tenant(client, db, "B")
    padded = {"Authorization": b"Bearer " + tenant_a.token.encode() + b"\xa0"}
    assert client.get(tenant_a.url("/Users"), headers=padded).status_code == 401
    for _ in range(FAILURE_BURST - 1):
        assert tenant_a.get("/Users", headers={"Authorization": "Bearer stale"}).status_code == 401
    answer = tenant_a.get("/Users")
    assert answer.status_code == 429
    assert answer.headers["content-type"].startswith("application/scim+json")
    assert "retry-after" in answer.headers
    assert tenant_b.get("/Users").status_code == 200
    assert _metric(client, "scim", "refused") == FAILURE_BURST


def test_guesses_sent_all_at_once_are_held_back_like_guesses_in_a_row(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    """Forty wrong SCIM tokens in flight together (each waits on the database): at most the
    allowance is answered 401, the rest 429; forty right ones at once all pass."""
    port = free_port()
    settings = make_settings(public_url=f"http://127.0.0.1:{port}")
    account = run(accounts.create_account(db, name="A", actor=OPERATOR_CLI))
    keys = run(
        accounts.generate_scim_keys(db, account_id=account.id, actor=OPERATOR_CLI, public_url="")
    )
    with live_server(settings, port) as url, httpx2.Client(timeout=30) as http:
        users = f"{url}/scim/v2/{account.id}/Users"

        def call(token: str) -> int:
            return http.get(users, headers={"Authorization": f"Bearer {token}"}).status_code

        with ThreadPoolExecutor(40) as pool:
            right = list(pool.map(call, [keys.secret_token] * 40))
            guesses = list(pool.map(call, [f"guess-{n}" for n in range(40)]))
    assert right == [200] * 40
    assert guesses.count(401) <= FAILURE_BURST
    assert set(guesses) == {401, 429}
