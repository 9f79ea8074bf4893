"""SCIM authentication, tenant isolation, key rotation and revocation, rate limiting."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from gateway.accounts import service as accounts
from gateway.app import create_app
from gateway.events.service import OPERATOR_CLI
from gateway.settings import Settings
from storage.engine import Database
from tests.conftest import PUBLIC_URL, Tenant, new_tenant, user_body
from tests.support.sync import run


def test_missing_token_is_401_scim_error(tenant: Tenant) -> None:
    """No Authorization header: 401 as a SCIM error with a WWW-Authenticate challenge."""
    response = tenant.client.get(tenant.url("/Users"))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/scim+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == "401"


def test_wrong_token_is_401(tenant: Tenant) -> None:
    """A wrong token is refused."""
    response = tenant.client.get(tenant.url("/Users"), headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_a_wrong_token_is_refused_before_anything_of_the_query_is_read(tenant: Tenant) -> None:
    """The token's check and the read share one trip to the database, and the read runs
    only after the check: a wrong token with a bad filter, a bad startIndex or bad
    attributes, or on a user that does not exist, is 401 whatever else is wrong."""
    wrong = {"Authorization": "Bearer nope"}
    for path, params in (
        ("/Users", {"filter": 'userName zz "x"'}),
        ("/Users", {"startIndex": str(2**40)}),
        ("/Users", {"attributes": "!!"}),
        ("/Users/00000000-0000-0000-0000-000000000000", {}),
        ("/Users/00000000-0000-0000-0000-000000000000", {"attributes": "!!"}),
    ):
        response = tenant.client.get(tenant.url(path), params=params, headers=wrong)
        assert response.status_code == 401, (path, params, response.text)
    # With the right token the same requests are refused for what is wrong with them.
    assert tenant.get("/Users", params={"filter": 'userName zz "x"'}).status_code == 400
    missing = tenant.get("/Users/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


def test_token_of_account_a_never_reads_or_changes_account_b(
    client: TestClient, db: Database
) -> None:
    """A's token on B's tenant URL is 401 for every method; B's users are untouched."""
    tenant_a = new_tenant(client, db, "A")
    tenant_b = new_tenant(client, db, "B")
    created_b = tenant_b.post("/Users", user_body(1)).json()
    a_on_b = {"Authorization": f"Bearer {tenant_a.token}"}
    for method, path in (
        ("GET", "/Users"),
        ("GET", f"/Users/{created_b['id']}"),
        ("DELETE", f"/Users/{created_b['id']}"),
        ("POST", "/Users"),
    ):
        response = client.request(
            method,
            tenant_b.url(path),
            headers=a_on_b,
            json=user_body(2) if method == "POST" else None,
        )
        assert response.status_code == 401, (method, path)
    assert tenant_b.get(f"/Users/{created_b['id']}").json() == created_b


def test_user_ids_of_another_account_are_not_found(client: TestClient, db: Database) -> None:
    """With its own token, A cannot reach B's user by id: 404."""
    tenant_a = new_tenant(client, db, "A")
    tenant_b = new_tenant(client, db, "B")
    created_b = tenant_b.post("/Users", user_body(1)).json()
    assert tenant_a.get(f"/Users/{created_b['id']}").status_code == 404
    assert tenant_a.filter(f'id eq "{created_b["id"]}"')["totalResults"] == 0


def test_unique_values_are_per_account(client: TestClient, db: Database) -> None:
    """The same userName and email may exist in two accounts."""
    tenant_a = new_tenant(client, db, "A")
    tenant_b = new_tenant(client, db, "B")
    assert tenant_a.post("/Users", user_body(1)).status_code == 201
    assert tenant_b.post("/Users", user_body(1)).status_code == 201


def test_generating_keys_stops_the_previous_token_at_once(tenant: Tenant, db: Database) -> None:
    """After 'generate keys' (here by another connection, as the CLI does) the old token is
    401 at once, even though it was just used, and the new one works."""
    assert tenant.get("/Users").status_code == 200
    keys = run(
        accounts.generate_scim_keys(
            db, account_id=tenant.account_id, actor=OPERATOR_CLI, public_url=PUBLIC_URL
        )
    )
    assert tenant.get("/Users").status_code == 401
    assert keys.tenant_url == tenant.tenant_url
    tenant.token = keys.secret_token
    assert tenant.get("/Users").status_code == 200


def test_removing_azure_ad_sync_revokes_the_token(tenant: Tenant, db: Database) -> None:
    """Removing the integration makes the token useless from the next request on."""
    assert tenant.get("/Users").status_code == 200
    run(
        accounts.remove_integration(
            db, account_id=tenant.account_id, kind="azure_ad_sync", actor=OPERATOR_CLI
        )
    )
    assert tenant.get("/Users").status_code == 401


def test_rate_limit_answers_429_with_retry_after(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    """Over the per-account rate, requests get 429 and a Retry-After in seconds."""
    settings = make_settings(scim_rate_limit_per_second=0.5, scim_rate_limit_burst=2)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as limited:
        tenant = new_tenant(limited, db)
        statuses = [tenant.get("/Users").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        response = tenant.get("/Users")
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        other = new_tenant(limited, db, "Other")
        assert other.get("/Users").status_code == 200
