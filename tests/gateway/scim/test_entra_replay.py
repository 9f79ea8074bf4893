"""Replays of the requests Microsoft Entra's provisioning service sends, in both PATCH shapes.

Each test plays one Entra behaviour from PROTOCOLS §1 and checks the outcome the way
Entra would see it next: by a GET and by the filter it uses to match users.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Tenant, user_body

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CLOUDLINK = "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User"
FLAG = "?aadOptscim062020"


def patch_body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def create(tenant: Tenant, n: int | str = 1, **extra: Any) -> dict[str, Any]:
    response = tenant.post("/Users", user_body(n, **extra))
    assert response.status_code == 201, response.text
    return dict(response.json())


def by_user_name(tenant: Tenant, user_name: str) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = tenant.filter(f'userName eq "{user_name}"')["Resources"]
    return resources


def test_test_connection_filter_on_random_guid_answers_empty_list(tenant: Tenant) -> None:
    """Entra's 'Test Connection' filters on a random GUID and needs 200 + empty list."""
    body = tenant.filter('userName eq "6e6d4bd3-07b4-4b4b-9dd6-1c9d3e3c1b9e"')
    assert body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }


def test_test_connection_probe_of_groups_answers_empty_list(tenant: Tenant) -> None:
    """Entra may probe /Groups even with group provisioning off: 200 + empty list, not 404."""
    response = tenant.get("/Groups", params={"filter": 'displayName eq "x"'})
    assert response.status_code == 200
    assert response.json()["totalResults"] == 0
    assert response.json()["Resources"] == []


def test_saving_the_configuration_reads_schemas(tenant: Tenant) -> None:
    """Saving the Entra configuration reads /Schemas."""
    response = tenant.get("/Schemas")
    assert response.status_code == 200
    ids = [schema["id"] for schema in response.json()["Resources"]]
    assert ids == [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        ENTERPRISE,
        CLOUDLINK,
    ]


def test_sync_cycle_no_match_then_post_then_match(tenant: Tenant) -> None:
    """A sync cycle: filter finds nothing, POST answers 201 with an id, the next filter finds it."""
    assert by_user_name(tenant, "user7@contoso.example") == []
    created = create(tenant, 7)
    assert created["id"]
    assert created["meta"]["location"].endswith("/Users/" + created["id"])
    found = by_user_name(tenant, "USER7@Contoso.Example")
    assert [user["id"] for user in found] == [created["id"]]


def test_post_without_display_name_is_accepted_with_given_and_family_name(tenant: Tenant) -> None:
    """Entra's documented create body has name.givenName/familyName but no displayName."""
    body = user_body(2)
    del body["displayName"]
    response = tenant.post("/Users", body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("attribute", ["externalId", "work email"])
def test_every_matching_attribute_is_filterable(tenant: Tenant, attribute: str) -> None:
    """userName, externalId and emails[type eq "work"].value all work as matching attributes."""
    created = create(tenant, 3)
    expression = {
        "externalId": 'externalId eq "ext-3"',
        "work email": 'emails[type eq "work"].value eq "USER3@contoso.example"',
    }[attribute]
    assert [u["id"] for u in tenant.filter(expression)["Resources"]] == [created["id"]]


def test_filter_spaces_may_arrive_as_plus(tenant: Tenant) -> None:
    """Entra may encode the spaces of a filter as '+'."""
    created = create(tenant, 4)
    response = tenant.client.get(
        tenant.url('/Users?filter=userName+eq+"user4@contoso.example"'), headers=tenant.headers
    )
    assert response.status_code == 200
    assert response.json()["Resources"][0]["id"] == created["id"]


def test_string_booleans_in_post_body(tenant: Tenant) -> None:
    """POST bodies may carry "True"/"False" as strings."""
    body = user_body(5, active="False")
    body["emails"][0]["primary"] = "True"
    response = tenant.post("/Users", body)
    assert response.status_code == 201, response.text
    assert response.json()["active"] is False
    assert response.json()["emails"][0]["primary"] is True


def test_nulls_and_meta_in_post_body_are_ignored(tenant: Tenant) -> None:
    """Legacy bodies carry nulls and read-only meta: they are ignored, not refused."""
    body = user_body(6, phoneNumbers=None, title=None, id="client-chosen")
    body["meta"] = {"resourceType": "User", "created": "2001-01-01T00:00:00Z"}
    response = tenant.post("/Users", body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert "phoneNumbers" not in created
    assert created["id"] != "client-chosen"
    assert created["meta"]["created"] != "2001-01-01T00:00:00Z"


SHAPES = {
    # Default shape: capitalised ops, string booleans, one op per attribute.
    "default": (
        "",
        [
            {"op": "Replace", "path": "displayName", "value": "Renamed"},
            {"op": "Replace", "path": "name.givenName", "value": "NewGiven"},
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "renamed@contoso.example",
            },
            {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+33612345678"},
            {"op": "Add", "path": f"{ENTERPRISE}:employeeNumber", "value": "E-42"},
            {"op": "Add", "path": f"{CLOUDLINK}:extension", "value": "4201"},
            {"op": "Replace", "path": "active", "value": "True"},
        ],
    ),
    # With ?aadOptscim062020: lowercase ops, real booleans, path-less op with dotted keys.
    "aadOptscim062020": (
        FLAG,
        [
            {
                "op": "replace",
                "value": {
                    "displayName": "Renamed",
                    "name.givenName": "NewGiven",
                    'emails[type eq "work"].value': "renamed@contoso.example",
                    f"{ENTERPRISE}:employeeNumber": "E-42",
                    f"{CLOUDLINK}:extension": "4201",
                    "active": True,
                },
            },
            {"op": "add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+33612345678"},
        ],
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_patch_of_changed_attributes_in_both_shapes(tenant: Tenant, shape: str) -> None:
    """Both of Entra's PATCH shapes update the same attributes; GET and filters see them."""
    flag, operations = SHAPES[shape]
    created = create(tenant, 8)
    response = tenant.patch(f"/Users/{created['id']}{flag}", patch_body(*operations))
    assert response.status_code == 200, response.text
    user = tenant.get(f"/Users/{created['id']}{flag}").json()
    assert user["displayName"] == "Renamed"
    assert user["name"]["givenName"] == "NewGiven"
    assert user["name"]["familyName"] == "Family8"
    assert {"type": "work", "value": "renamed@contoso.example"}.items() <= user["emails"][0].items()
    assert user["phoneNumbers"] == [{"type": "mobile", "value": "+33612345678"}]
    assert user[ENTERPRISE]["employeeNumber"] == "E-42"
    assert user[CLOUDLINK]["extension"] == "4201"
    assert response.json() == user
    found = tenant.filter('emails[type eq "work"].value eq "renamed@contoso.example"')
    assert [u["id"] for u in found["Resources"]] == [created["id"]]
    assert "name.givenName" not in user


def test_add_on_unmatched_filtered_path_creates_the_entry(tenant: Tenant) -> None:
    """Add on phoneNumbers[type eq "work"].value with no work number creates it."""
    created = create(tenant, 9)
    response = tenant.patch(
        f"/Users/{created['id']}",
        patch_body(
            {"op": "Add", "path": 'phoneNumbers[type eq "work"].value', "value": "+14255550100"},
            {"op": "Add", "path": 'addresses[type eq "work"].locality', "value": "Redmond"},
            {
                "op": "Replace",
                "path": 'emails[type eq "other"].value',
                "value": "o9@contoso.example",
            },
        ),
    )
    assert response.status_code == 200, response.text
    user = response.json()
    assert user["phoneNumbers"] == [{"type": "work", "value": "+14255550100"}]
    assert user["addresses"] == [{"type": "work", "locality": "Redmond"}]
    assert {e["type"]: e["value"] for e in user["emails"]}["other"] == "o9@contoso.example"


def test_add_on_single_valued_attribute_replaces_it(tenant: Tenant) -> None:
    """Add on an attribute that already has a value replaces it."""
    created = create(tenant, 10)
    response = tenant.patch(
        f"/Users/{created['id']}",
        patch_body({"op": "Add", "path": "displayName", "value": "Other"}),
    )
    assert response.json()["displayName"] == "Other"


def test_primary_role_path_compares_boolean_with_string(tenant: Tenant) -> None:
    """roles[primary eq "True"].value sets the primary role."""
    created = create(tenant, 11)
    path = 'roles[primary eq "True"].value'
    first = tenant.patch(
        f"/Users/{created['id']}", patch_body({"op": "Add", "path": path, "value": "Admin"})
    )
    assert first.status_code == 200, first.text
    second = tenant.patch(
        f"/Users/{created['id']}", patch_body({"op": "Replace", "path": path, "value": "Agent"})
    )
    assert second.json()["roles"] == [{"value": "Agent", "primary": True}]


def test_manager_sent_as_plain_id_is_stored_as_reference(tenant: Tenant) -> None:
    """Entra sends the manager's id alone as the value of ...:manager."""
    manager = create(tenant, 12)
    report = create(tenant, 13)
    response = tenant.patch(
        f"/Users/{report['id']}",
        patch_body({"op": "Add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]}),
    )
    assert response.status_code == 200, response.text
    assert response.json()[ENTERPRISE]["manager"] == {
        "value": manager["id"],
        "$ref": manager["meta"]["location"],
    }


def test_manager_in_a_post_body_without_ref_is_accepted(tenant: Tenant) -> None:
    """A POST carrying manager {"value": id} (no $ref) is completed, not refused."""
    manager = create(tenant, 21)
    report = create(tenant, 22, **{ENTERPRISE: {"manager": {"value": manager["id"]}}})
    assert report[ENTERPRISE]["manager"]["$ref"] == manager["meta"]["location"]


def test_removing_a_phone_value_removes_the_number(tenant: Tenant) -> None:
    """Remove phoneNumbers[type eq "mobile"].value leaves no empty entry behind."""
    created = create(tenant, 14, phoneNumbers=[{"type": "mobile", "value": "+33611111114"}])
    response = tenant.patch(
        f"/Users/{created['id']}",
        patch_body({"op": "Remove", "path": 'phoneNumbers[type eq "mobile"].value'}),
    )
    assert response.status_code == 200, response.text
    assert "phoneNumbers" not in response.json()
    assert tenant.filter('phoneNumbers.value eq "+33611111114"')["totalResults"] == 0


@pytest.mark.parametrize("flag", ["", FLAG])
def test_deprovision_keeps_user_readable_and_filterable(tenant: Tenant, flag: str) -> None:
    """Soft delete is PATCH active=false; the user stays readable and matchable."""
    created = create(tenant, 15)
    value: Any = "False" if not flag else False
    op = "Replace" if not flag else "replace"
    response = tenant.patch(
        f"/Users/{created['id']}{flag}", patch_body({"op": op, "path": "active", "value": value})
    )
    assert response.status_code == 200, response.text
    assert tenant.get(f"/Users/{created['id']}").json()["active"] is False
    found = by_user_name(tenant, "user15@contoso.example")
    assert [(u["id"], u["active"]) for u in found] == [(created["id"], False)]
    assert tenant.filter("active eq false")["totalResults"] == 1


def test_reprovision_after_deprovision_reactivates_the_same_user(tenant: Tenant) -> None:
    """Re-assigning a soft-deleted user patches active=true on the same id; no duplicate."""
    created = create(tenant, 16)
    tenant.patch(
        f"/Users/{created['id']}", patch_body({"op": "Replace", "path": "active", "value": "False"})
    )
    match = by_user_name(tenant, "user16@contoso.example")
    response = tenant.patch(
        f"/Users/{match[0]['id']}", patch_body({"op": "Replace", "path": "active", "value": "True"})
    )
    assert response.json()["active"] is True
    assert tenant.filter("")["totalResults"] == 1


def test_post_of_a_soft_deleted_users_name_is_a_uniqueness_conflict(tenant: Tenant) -> None:
    """A deactivated user still holds its userName: a second POST gets 409 uniqueness."""
    created = create(tenant, 17)
    tenant.patch(
        f"/Users/{created['id']}", patch_body({"op": "Replace", "path": "active", "value": "False"})
    )
    response = tenant.post("/Users", user_body(17))
    assert response.status_code == 409
    assert response.json()["scimType"] == "uniqueness"


def test_hard_delete_then_gone(tenant: Tenant) -> None:
    """DELETE answers 204; then GET is 404 and the filter finds nothing."""
    created = create(tenant, 18)
    assert tenant.delete(f"/Users/{created['id']}").status_code == 204
    missing = tenant.get(f"/Users/{created['id']}")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/scim+json")
    assert by_user_name(tenant, "user18@contoso.example") == []
    assert tenant.delete(f"/Users/{created['id']}").status_code == 404


def test_hard_delete_frees_the_unique_values(tenant: Tenant) -> None:
    """After a hard delete, the same userName and email can be provisioned again."""
    created = create(tenant, 19)
    tenant.delete(f"/Users/{created['id']}")
    assert tenant.post("/Users", user_body(19)).status_code == 201


def test_group_writes_explain_that_group_provisioning_must_be_disabled(tenant: Tenant) -> None:
    """POST /Groups answers a SCIM error telling the admin to disable group provisioning."""
    response = tenant.post(
        "/Groups",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Sales"},
    )
    assert response.status_code == 400
    assert "Provision Microsoft Entra ID Groups" in response.json()["detail"]
    assert "Enabled: No" in response.json()["detail"]


def test_errors_are_scim_json_with_actionable_detail(tenant: Tenant) -> None:
    """A bad value gets 400, application/scim+json, and a detail saying how to fix it."""
    response = tenant.post(
        "/Users", user_body(20, phoneNumbers=[{"type": "mobile", "value": "06 12 34 56 78"}])
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/scim+json")
    error = response.json()
    assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert error["status"] == "400"
    assert "E.164" in error["detail"]
