"""The operator admin API: accounts, integrations, keys; auth and bad input."""

from __future__ import annotations

from starlette.testclient import TestClient


def test_admin_api_requires_the_operator_token(client: TestClient) -> None:
    """No token or a wrong token: 401 JSON with what to send."""
    assert client.get("/api/v1/accounts").status_code == 401
    wrong = client.get("/api/v1/accounts", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"


def test_account_lifecycle(client: TestClient, admin_headers: dict[str, str]) -> None:
    """Create, read, rename and list an account."""
    created = client.post("/api/v1/accounts", json={"name": "Acme"}, headers=admin_headers)
    assert created.status_code == 201
    account = created.json()
    url = f"/api/v1/accounts/{account['id']}"
    assert client.get(url, headers=admin_headers).json()["name"] == "Acme"
    renamed = client.patch(url, json={"name": "Acme SA"}, headers=admin_headers)
    assert renamed.json()["name"] == "Acme SA"
    listed = client.get("/api/v1/accounts", headers=admin_headers).json()["items"]
    assert [a["id"] for a in listed] == [account["id"]]


def test_bad_account_body_is_400_and_creates_nothing(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Missing name, extra fields, or not JSON: 400 with the field named."""
    for body in ({}, {"name": ""}, {"name": "x", "color": "red"}):
        response = client.post("/api/v1/accounts", json=body, headers=admin_headers)
        assert response.status_code == 400, body
    broken = client.post("/api/v1/accounts", content=b"{", headers=admin_headers)
    assert broken.status_code == 400
    assert client.get("/api/v1/accounts", headers=admin_headers).json()["items"] == []


def test_unknown_account_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    """Every per-account endpoint answers 404 for an unknown account."""
    for path in ("", "/integrations", "/events", "/events.csv", "/feed"):
        response = client.get(f"/api/v1/accounts/nope{path}", headers=admin_headers)
        assert response.status_code == 404, path


def test_generate_keys_adds_azure_ad_sync_and_never_shows_the_token_again(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Keys come back once; listing integrations shows the tenant URL but no secret."""
    account = client.post("/api/v1/accounts", json={"name": "Acme"}, headers=admin_headers).json()
    base = f"/api/v1/accounts/{account['id']}/integrations"
    keys = client.post(f"{base}/azure_ad_sync/keys", headers=admin_headers)
    assert keys.status_code == 200
    assert keys.headers["cache-control"] == "no-store"
    token = keys.json()["secret_token"]
    listed = client.get(base, headers=admin_headers)
    assert token not in listed.text
    [integration] = listed.json()["items"]
    assert integration["kind"] == "azure_ad_sync"
    assert integration["tenant_url"] == keys.json()["tenant_url"]
    scim = client.get(
        keys.json()["tenant_url"] + "/Users", headers={"Authorization": f"Bearer {token}"}
    )
    assert scim.status_code == 200


def test_integrations_add_twice_conflicts_and_remove_revokes(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Adding twice is 409; removing twice is 404; unknown kinds are refused."""
    account = client.post("/api/v1/accounts", json={"name": "Acme"}, headers=admin_headers).json()
    base = f"/api/v1/accounts/{account['id']}/integrations"
    assert (
        client.post(base, json={"kind": "azure_ad_sync"}, headers=admin_headers).status_code == 201
    )
    assert (
        client.post(base, json={"kind": "azure_ad_sync"}, headers=admin_headers).status_code == 409
    )
    assert (
        client.post(base, json={"kind": "microsoft_teams"}, headers=admin_headers).status_code
        == 201
    )
    assert client.post(base, json={"kind": "fax"}, headers=admin_headers).status_code == 400
    assert client.delete(f"{base}/azure_ad_sync", headers=admin_headers).status_code == 204
    assert client.delete(f"{base}/azure_ad_sync", headers=admin_headers).status_code == 404


def test_openapi_document_describes_every_admin_route(client: TestClient) -> None:
    """/api/v1/openapi.json is OpenAPI 3.1 and lists the admin operations."""
    document = client.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/accounts/{account_id}/feed" in document["paths"]
    assert "post" in document["paths"]["/api/v1/accounts"]
    assert "AccountCreate" in document["components"]["schemas"]
