"""The /Users endpoint: CloudLink's rules, uniqueness, replacement, pagination, projection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from storage.engine import Database
from tests.conftest import PUBLIC_URL, Tenant, new_tenant, user_body

CLOUDLINK = "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User"


def create(tenant: Tenant, n: int | str, **extra: Any) -> dict[str, Any]:
    response = tenant.post("/Users", user_body(n, **extra))
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_answers_201_with_location_and_stored_resource(tenant: Tenant) -> None:
    """POST answers 201, a Location header, and the resource a later GET returns."""
    response = tenant.post("/Users", user_body(1))
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == created["meta"]["location"]
    assert tenant.get(f"/Users/{created['id']}").json() == created


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"userName": None}, "'userName' is required"),
        ({"displayName": None, "name": None}, "one of displayName"),
        ({"emails": [{"type": "other", "value": "o@contoso.example"}]}, "requires a work email"),
        ({"emails": [{"type": "home", "value": "h@contoso.example"}]}, 'type "home"'),
        ({"emails": [{"type": "work", "value": "not-an-address"}]}, "not a valid email address"),
        ({"phoneNumbers": [{"type": "mobile", "value": "0612345678"}]}, "E.164"),
        ({"phoneNumbers": [{"type": "fax", "value": "+14255550100"}]}, 'type "fax"'),
        ({"addresses": [{"type": "home", "locality": "Paris"}]}, "work address"),
        ({"active": "maybe"}, "active"),
    ],
)
def test_create_breaking_a_rule_is_400_naming_the_fix(
    tenant: Tenant, change: dict[str, Any], fragment: str
) -> None:
    """Each CloudLink rule refuses with 400 and a detail that says what to change."""
    body = user_body(2)
    for key, value in change.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    response = tenant.post("/Users", body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]
    assert tenant.filter("")["totalResults"] == 0


@pytest.mark.parametrize(
    ("attribute", "first", "second"),
    [
        ("userName", {}, {"userName": "USER1@contoso.example"}),
        (
            "emails",
            {},
            {
                "emails": [
                    {"type": "work", "value": "x@contoso.example"},
                    {"type": "other", "value": "User1@Contoso.Example"},
                ]
            },
        ),
        (
            "phoneNumbers",
            {"phoneNumbers": [{"type": "mobile", "value": "+33600000001"}]},
            {"phoneNumbers": [{"type": "work", "value": "+33600000001"}]},
        ),
        (
            f"{CLOUDLINK}:extension",
            {CLOUDLINK: {"extension": "100"}},
            {CLOUDLINK: {"extension": "100"}},
        ),
        (
            f"{CLOUDLINK}:loginId",
            {CLOUDLINK: {"loginId": "jdoe"}},
            {CLOUDLINK: {"loginId": "JDoe"}},
        ),
    ],
)
def test_clash_of_a_unique_value_is_409_uniqueness_naming_the_attribute(
    tenant: Tenant, attribute: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    """A value another user holds gives 409 uniqueness naming the attribute, not the user."""
    holder = create(tenant, 1, **first)
    body = user_body(2, **second)
    response = tenant.post("/Users", body)
    assert response.status_code == 409, response.text
    error = response.json()
    assert error["scimType"] == "uniqueness"
    assert error["detail"].startswith(f"{attribute}:")
    assert holder["id"] not in error["detail"]
    assert "user1" not in error["detail"].lower()
    assert tenant.filter("")["totalResults"] == 1


def test_one_user_may_repeat_its_own_value_across_types(tenant: Tenant) -> None:
    """The same number as mobile and work on one user is not a clash with itself."""
    response = tenant.post(
        "/Users",
        user_body(
            3,
            phoneNumbers=[
                {"type": "mobile", "value": "+33600000003"},
                {"type": "work", "value": "+33600000003"},
            ],
        ),
    )
    assert response.status_code == 201, response.text


def test_patch_into_another_users_value_is_409_and_changes_nothing(tenant: Tenant) -> None:
    """A PATCH that would take another user's email is refused; the user is unchanged."""
    create(tenant, 1)
    second = create(tenant, 2)
    response = tenant.patch(
        f"/Users/{second['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "Replace",
                    "path": 'emails[type eq "work"].value',
                    "value": "user1@contoso.example",
                }
            ],
        },
    )
    assert response.status_code == 409
    assert tenant.get(f"/Users/{second['id']}").json() == second


def test_put_replaces_the_whole_user(tenant: Tenant) -> None:
    """PUT makes the body the user's state: attributes left out are gone."""
    created = create(tenant, 4, phoneNumbers=[{"type": "mobile", "value": "+33600000004"}])
    body = user_body(4, displayName="Replaced")
    response = tenant.put(f"/Users/{created['id']}", body)
    assert response.status_code == 200, response.text
    user = tenant.get(f"/Users/{created['id']}").json()
    assert user["displayName"] == "Replaced"
    assert "phoneNumbers" not in user
    assert user["meta"]["created"] == created["meta"]["created"]


def test_put_with_a_different_id_in_the_body_is_refused(tenant: Tenant) -> None:
    """The id in a PUT body must match the URL."""
    created = create(tenant, 5)
    response = tenant.put(f"/Users/{created['id']}", {**user_body(5), "id": "other"})
    assert response.status_code == 400


def test_unknown_user_is_404_for_every_method(tenant: Tenant) -> None:
    """GET, PUT, PATCH and DELETE of an unknown id answer 404."""
    for method, body in (
        ("GET", None),
        ("PUT", user_body(6)),
        ("DELETE", None),
        (
            "PATCH",
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": False}],
            },
        ),
    ):
        response = tenant.request(method, "/Users/unknown-id", json=body)
        assert response.status_code == 404, (method, response.text)


def test_pagination_returns_the_count_asked_and_the_true_total(tenant: Tenant) -> None:
    """itemsPerPage is the number returned; totalResults counts every match."""
    ids = [create(tenant, n)["id"] for n in range(1, 6)]
    page = tenant.get("/Users", params={"startIndex": 2, "count": 2}).json()
    assert page["totalResults"] == 5
    assert page["startIndex"] == 2
    assert page["itemsPerPage"] == 2
    assert [u["id"] for u in page["Resources"]] == ids[1:3]
    last = tenant.get("/Users", params={"startIndex": 5, "count": 10}).json()
    assert last["itemsPerPage"] == 1
    empty = tenant.get("/Users", params={"count": 0}).json()
    assert (empty["totalResults"], empty["itemsPerPage"]) == (5, 0)


def test_non_integer_count_is_400(tenant: Tenant) -> None:
    """count must be an integer."""
    assert tenant.get("/Users", params={"count": "ten"}).status_code == 400


def test_attributes_and_excluded_attributes_project_the_response(tenant: Tenant) -> None:
    """attributes keeps the named ones (and id); excludedAttributes drops them."""
    created = create(tenant, 7)
    only = tenant.get(f"/Users/{created['id']}", params={"attributes": "userName"}).json()
    assert only["userName"] == "user7@contoso.example"
    assert only["id"] == created["id"]
    assert "emails" not in only
    without = tenant.get("/Users", params={"excludedAttributes": "emails,name"}).json()
    resource = without["Resources"][0]
    assert "emails" not in resource
    assert "name" not in resource
    assert resource["userName"] == "user7@contoso.example"


def test_unsupported_attributes_are_dropped_not_stored(tenant: Tenant) -> None:
    """Attributes CloudLink does not keep (title, nickName) are ignored, not echoed."""
    created = create(tenant, 8, title="Boss", nickName="B")
    assert "title" not in created
    assert "nickName" not in created


def test_malformed_json_is_400_invalid_syntax(tenant: Tenant) -> None:
    """A body that is not JSON is refused with invalidSyntax."""
    response = tenant.request("POST", "/Users", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidSyntax"


def test_non_json_content_type_is_415(tenant: Tenant) -> None:
    """A form body is refused with 415 and what to send instead."""
    response = tenant.request(
        "POST",
        "/Users",
        content=b"a=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


def test_bulk_and_me_answer_501(tenant: Tenant) -> None:
    """Features not offered answer 501 as SCIM errors."""
    assert tenant.post("/Bulk", {}).status_code == 501
    assert tenant.get("/Me").status_code == 501


def test_body_over_the_limit_is_413_and_creates_nothing(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    """A body larger than GATEWAY_MAX_BODY_BYTES is refused with 413, as a SCIM error."""
    with TestClient(create_app(make_settings(max_body_bytes=2048)), base_url=PUBLIC_URL) as small:
        tenant = new_tenant(small, db)
        response = tenant.post("/Users", user_body(1, displayName="x" * 4096))
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/scim+json")
        assert tenant.filter("")["totalResults"] == 0


def test_nul_characters_are_refused_wherever_they_come_from(
    tenant: Tenant, client: TestClient, admin_headers: dict[str, str]
) -> None:
    """A NUL in a body, a filter, a path or an admin body is a 400, not a database error."""
    assert tenant.post("/Users", user_body("nul\x00")).status_code == 400
    assert tenant.get("/Users", params={"filter": 'userName eq "a\x00"'}).status_code == 400
    missing = tenant.get("/Users/abc%00")
    assert missing.status_code == 400
    assert missing.headers["content-type"].startswith("application/scim+json")
    admin = client.post("/api/v1/accounts", json={"name": "a\x00"}, headers=admin_headers)
    assert admin.status_code == 400
    assert tenant.filter("")["totalResults"] == 0
