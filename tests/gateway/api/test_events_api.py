"""Event history (filters, pagination, CSV) and the account feed."""

from __future__ import annotations

import csv
import io
from typing import Any

from starlette.testclient import TestClient

from tests.conftest import Tenant, user_body
from tests.support import feed


def events(client: TestClient, tenant: Tenant, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(
        f"/api/v1/accounts/{tenant.account_id}/events", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def provision(tenant: Tenant) -> str:
    user_id: str = tenant.post("/Users", user_body(1)).json()["id"]
    tenant.patch(
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        },
    )
    tenant.delete(f"/Users/{user_id}")
    return user_id


def test_each_scim_change_records_one_event_with_actor_and_changes(
    client: TestClient, tenant: Tenant, admin_headers: dict[str, str]
) -> None:
    """Create, deactivate and delete are three SCIM events: action, asset, properties."""
    user_id = provision(tenant)
    page = events(client, tenant, admin_headers, actor="SCIM")
    assert [(e["action"], e["type"]) for e in page["items"]] == [
        ("Delete", "user.deleted"),
        ("Edit", "user.deactivated"),
        ("Create", "user.created"),
    ]
    created = page["items"][-1]
    assert created["asset"] == "User"
    assert created["asset_id"] == user_id
    assert created["actor"] == {"name": "SCIM", "id": "azure_ad_sync"}
    assert "email" in created["properties_changed"]
    assert page["items"][1]["properties_changed"] == ["active"]
    assert created["details"]["userName"] == "user1@contoso.example"


def test_refused_requests_record_no_event(
    client: TestClient, tenant: Tenant, admin_headers: dict[str, str]
) -> None:
    """A 400 or 409 changes nothing, so it writes no event."""
    tenant.post("/Users", user_body(1))
    tenant.post("/Users", user_body(1))
    tenant.post("/Users", {"userName": "x"})
    assert len(events(client, tenant, admin_headers, asset="User")["items"]) == 1


def test_history_filters_and_pages(
    client: TestClient, tenant: Tenant, admin_headers: dict[str, str]
) -> None:
    """Filters combine; pages follow next_cursor newest to oldest without overlap."""
    provision(tenant)
    everything = events(client, tenant, admin_headers)["items"]
    assert len(everything) == 6  # account, integration added, keys, and 3 user events
    assert [e["action"] for e in events(client, tenant, admin_headers, action="Edit")["items"]] == [
        "Edit",
        "Edit",
    ]
    assert events(client, tenant, admin_headers, since="2999-01-01T00:00:00Z")["items"] == []
    assert len(events(client, tenant, admin_headers, until="2999-01-01")["items"]) == 6
    first = events(client, tenant, admin_headers, limit=4)
    second = events(client, tenant, admin_headers, limit=4, cursor=first["next_cursor"])
    assert [e["id"] for e in first["items"] + second["items"]] == [e["id"] for e in everything]
    assert second["next_cursor"] is None


def test_bad_history_parameters_are_400(
    client: TestClient, tenant: Tenant, admin_headers: dict[str, str]
) -> None:
    """Unknown action, bad date, bad limit: 400."""
    base = f"/api/v1/accounts/{tenant.account_id}/events"
    for params in (
        {"action": "Frob"},
        {"since": "yesterday"},
        {"limit": "0"},
        {"limit": "x"},
        {"cursor": "abc"},
    ):
        assert client.get(base, params=params, headers=admin_headers).status_code == 400, params


def test_csv_export_has_one_row_per_event(
    client: TestClient, tenant: Tenant, admin_headers: dict[str, str]
) -> None:
    """The CSV export holds the filtered events with their columns."""
    provision(tenant)
    response = client.get(
        f"/api/v1/accounts/{tenant.account_id}/events.csv",
        params={"asset": "User"},
        headers=admin_headers,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["action"] for r in rows] == ["Delete", "Edit", "Create"]
    assert rows[0]["actor_name"] == "SCIM"


def test_feed_is_read_in_order_by_cursor(
    client: TestClient, tenant: Tenant, admin_headers: dict[str, str]
) -> None:
    """The feed returns events oldest first after the cursor; reading on resumes exactly."""
    account = f"/api/v1/accounts/{tenant.account_id}"
    base = account + "/feed"
    page_of, committed = feed.of_account(
        lambda method, path: client.request(method, account + path, headers=admin_headers)
    )
    cursor = feed.settled(page_of, committed)[-1]["cursor"]
    user_id = provision(tenant)
    feed.settled(page_of, committed)
    page = client.get(base, params={"after": cursor, "limit": 2}, headers=admin_headers).json()
    assert [i["type"] for i in page["items"]] == ["user.created", "user.deactivated"]
    assert page["items"][0]["data"]["id"] == user_id
    rest = client.get(base, params={"after": page["next_cursor"]}, headers=admin_headers).json()
    assert [i["type"] for i in rest["items"]] == ["user.deleted"]
    tail = client.get(base, params={"after": rest["next_cursor"]}, headers=admin_headers).json()
    assert tail == {"items": [], "next_cursor": rest["next_cursor"]}
