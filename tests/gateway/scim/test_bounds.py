"""Hostile or odd input to /Users is a 4xx naming the bound, never a 5xx or a slow request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.scim.filter_parsing import MAX_FILTER_COMPARISONS, MAX_FILTER_DEPTH
from gateway.scim.parsing import MAX_PATCH_OPERATIONS, MAX_PATCH_PATH_LENGTH
from gateway.scim.routes import MAX_ATTRIBUTE_NAME_LENGTH, MAX_ATTRIBUTE_NAMES, MAX_START_INDEX
from gateway.scim.rules import MAX_ENTRIES
from gateway.settings import Settings
from storage.engine import Database
from tests.conftest import PUBLIC_URL, Tenant, new_tenant, user_body

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CLOUDLINK = "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User"

NE = 'displayName ne "x"'
JSON_LEAF = 'name.formatted ne "x"'
LOGIN_LEAF = f'{CLOUDLINK}:loginId ne "x"'
VALUE_FILTER = 'emails[not (type eq "work" or not (value ne "x"))]'
EXISTS_LEAF = 'emails[type eq "work" and value ne "x"]'
DEPTH = MAX_FILTER_DEPTH


def refused(response: Any, scim_type: str, *fragments: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["scimType"] == scim_type, error
    for fragment in fragments:
        assert fragment in error["detail"], error["detail"]


def nested_not(levels: int, inner: str) -> str:
    return "not (" * levels + inner + ")" * levels


def switching(levels: int, leaf: str, bottom: str) -> str:
    """``leaf or (leaf and (leaf or (...)))``: one and/or switch per level."""
    ops = ["or" if i % 2 == 0 else "and" for i in range(levels)]
    return "".join(f"{leaf} {op} (" for op in ops) + bottom + ")" * levels


def negated_switching(levels: int, leaf: str, bottom: str) -> str:
    """``not (leaf or not (leaf and ...))``: a not and a group per two levels."""
    ops = ["or" if i % 2 == 0 else "and" for i in range(levels)]
    return "".join(f"not ({leaf} {op} " for op in ops) + bottom + ")" * levels


def chain(count: int, leaf: str, op: str) -> str:
    return f" {op} ".join([leaf] * count)


def get_users(tenant: Tenant, **params: Any) -> Any:
    return tenant.get("/Users", params=params)


def test_not_nested_past_the_depth_limit_is_400_invalid_filter(tenant: Tenant) -> None:
    """``not (`` nested 44 deep (a SQLite parser stack overflow) is refused naming the limit."""
    response = get_users(tenant, filter=nested_not(44, 'userName eq "a"'))
    refused(response, "invalidFilter", f"more than {MAX_FILTER_DEPTH} levels")


def test_parentheses_nested_949_deep_are_400_invalid_filter(tenant: Tenant) -> None:
    """Parentheses nested 949 deep, deeper than the compiler can recurse, are refused."""
    response = get_users(tenant, filter="(" * 949 + 'userName eq "a"' + ")" * 949)
    refused(response, "invalidFilter", f"more than {MAX_FILTER_DEPTH} levels")


def test_and_or_switches_without_parentheses_are_two_levels_and_run(tenant: Tenant) -> None:
    """Alternating and/or without parentheses is an or of ands (RFC 7644 precedence): shallow."""
    leaves = [f'userName eq "{n}"' for n in range(MAX_FILTER_DEPTH * 3)]
    text = " ".join(f"{leaf} {'or' if n % 2 else 'and'}" for n, leaf in enumerate(leaves[:-1]))
    response = get_users(tenant, filter=f"{text} {leaves[-1]}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("op", ["and", "or"])
def test_more_comparisons_than_the_limit_are_400_invalid_filter(tenant: Tenant, op: str) -> None:
    """A chain one comparison longer than the limit is refused naming the limit."""
    response = get_users(tenant, filter=chain(MAX_FILTER_COMPARISONS + 1, 'id eq "a"', op))
    refused(response, "invalidFilter", f"more than {MAX_FILTER_COMPARISONS} comparisons")


@pytest.mark.parametrize(
    "expression",
    [
        # VALUE_FILTER is 4 levels: the value filter, two nots and an or.
        pytest.param(nested_not(DEPTH - 4, VALUE_FILTER), id="not-over-value-filter"),
        pytest.param(switching(DEPTH, JSON_LEAF, JSON_LEAF), id="switch-json"),
        pytest.param(switching(DEPTH, LOGIN_LEAF, LOGIN_LEAF), id="switch-login"),
        pytest.param(negated_switching((DEPTH - 4) // 2, NE, VALUE_FILTER), id="not-switch"),
        pytest.param(
            "emails[" + negated_switching((DEPTH - 1) // 2, 'value ne "x"', "type pr") + "]",
            id="inside-value-filter",
        ),
        pytest.param(
            nested_not(DEPTH - 1, chain(MAX_FILTER_COMPARISONS, NE, "or")),
            id="not-over-long-chain",
        ),
        pytest.param(chain(MAX_FILTER_COMPARISONS // 2, EXISTS_LEAF, "or"), id="exists-chain"),
    ],
)
def test_filters_at_the_bounds_run_on_every_backend(tenant: Tenant, expression: str) -> None:
    """The most nested and longest filters the bounds accept run on the database: 200."""
    response = get_users(tenant, filter=expression)
    assert response.status_code == 200, response.text


@pytest.fixture
def small_pages(make_settings: Callable[..., Settings], db: Database) -> Iterator[Tenant]:
    """A tenant on an app whose pages hold at most 3 users, with 5 users."""
    app = create_app(make_settings(scim_max_page_size=3))
    with TestClient(app, base_url=PUBLIC_URL) as client:
        tenant = new_tenant(client, db)
        for n in range(5):
            assert tenant.post("/Users", user_body(n)).status_code == 201
        yield tenant


@pytest.mark.parametrize(
    ("count", "expected"),
    [("-3", 0), ("-" + "9" * 40, 0), ("0", 0), ("2", 2), (str(10**30), 3), ("9" * 5000, 3)],
)
def test_count_out_of_range_is_clamped_as_rfc_7644_reads_it(
    small_pages: Tenant, count: str, expected: int
) -> None:
    """A negative count is 0 and a count above the page size, however large, is the page size."""
    page = get_users(small_pages, count=count)
    assert page.status_code == 200, page.text
    assert (page.json()["itemsPerPage"], page.json()["totalResults"]) == (expected, 5)


@pytest.mark.parametrize("count", ["ten", "1.5", "+", "- 1", "1e3", "\u0661\u0662", "0x10"])
def test_count_that_is_not_an_integer_is_400_invalid_value(tenant: Tenant, count: str) -> None:
    """A count that is not a decimal integer, of whatever size, is refused."""
    refused(get_users(tenant, count=count), "invalidValue", "count must be an integer")


@pytest.mark.parametrize("start", ["0", "-1", "-" + "9" * 40])
def test_start_index_below_one_is_one(tenant: Tenant, start: str) -> None:
    """A startIndex below 1, however large its magnitude, is read as 1."""
    assert tenant.post("/Users", user_body(1)).status_code == 201
    page = get_users(tenant, startIndex=start)
    assert page.status_code == 200, page.text
    assert (page.json()["startIndex"], page.json()["itemsPerPage"]) == (1, 1)


@pytest.mark.parametrize("start", [str(MAX_START_INDEX + 1), str(10**30), "9" * 5000])
def test_start_index_above_int32_is_400_invalid_value(tenant: Tenant, start: str) -> None:
    """A startIndex no database can use as an offset is refused naming the maximum."""
    refused(get_users(tenant, startIndex=start), "invalidValue", str(MAX_START_INDEX))


def test_last_start_index_the_databases_accept_is_an_empty_page(tenant: Tenant) -> None:
    """startIndex 2^31-1 is answered with an empty page on every backend."""
    page = get_users(tenant, startIndex=str(MAX_START_INDEX))
    assert page.status_code == 200, page.text
    assert page.json()["Resources"] == []


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("attribute", ["meta.created", "meta.lastModified"])
def test_filter_date_time_outside_the_storable_range_is_400_invalid_value(
    tenant: Tenant, attribute: str, moment: str
) -> None:
    """A well-formed date-time outside years 1 to 9999 in UTC is a bad value, not a bad filter."""
    response = get_users(tenant, filter=f'{attribute} gt "{moment}"')
    refused(response, "invalidValue", "years 1 to 9999")


def test_malformed_filter_date_time_stays_400_invalid_filter(tenant: Tenant) -> None:
    """A date-time that is not ISO 8601 is still a bad filter."""
    response = get_users(tenant, filter='meta.created gt "2026-13-45T00:00:00Z"')
    refused(response, "invalidFilter", "is not a date-time")


def entries(attribute: str, count: int) -> list[dict[str, Any]]:
    if attribute == "emails":
        return [{"type": "work", "value": f"u{n}@contoso.example"} for n in range(count)]
    if attribute == "phoneNumbers":
        return [{"type": "mobile", "value": f"+336000000{n:02d}"} for n in range(count)]
    if attribute == "addresses":
        return [{"type": "work", "locality": f"City {n}"} for n in range(count)]
    return [{"value": f"role{n}"} for n in range(count)]


@pytest.mark.parametrize("attribute", ["emails", "phoneNumbers", "addresses", "roles"])
def test_more_entries_than_the_limit_is_400_naming_attribute_and_limit(
    tenant: Tenant, attribute: str
) -> None:
    """A user may hold at most MAX_ENTRIES of each multi-valued attribute; one more is refused."""
    full = tenant.post("/Users", user_body(1, **{attribute: entries(attribute, MAX_ENTRIES)}))
    assert full.status_code == 201, full.text
    body = user_body(2, **{attribute: entries(attribute, MAX_ENTRIES + 1)})
    refused(tenant.post("/Users", body), "invalidValue", attribute, f"at most {MAX_ENTRIES}")
    assert tenant.filter('userName eq "user2@contoso.example"')["totalResults"] == 0


def test_huge_email_list_is_refused_before_its_entries_are_validated(tenant: Tenant) -> None:
    """10,000 emails are refused on their number alone, before any entry is looked at."""
    body = user_body(1, emails=[12345] * 10_000)
    refused(tenant.post("/Users", body), "invalidValue", "emails has 10000 entries")


def test_patch_value_with_a_huge_list_is_refused_before_validation(tenant: Tenant) -> None:
    """A PATCH operation carrying 10,000 phone numbers is refused on their number alone."""
    user = tenant.post("/Users", user_body(1)).json()
    for operation in (
        {"op": "add", "path": "phoneNumbers", "value": [12345] * 10_000},
        {"op": "add", "value": {"PhoneNumbers": [12345] * 10_000}},
    ):
        body = {"schemas": [PATCH_OP], "Operations": [operation]}
        response = tenant.patch(f"/Users/{user['id']}", body)
        refused(response, "invalidValue", "phoneNumbers has 10000 entries")


def test_patch_adding_past_the_entry_limit_is_400_and_changes_nothing(tenant: Tenant) -> None:
    """Operations that together push a list past the limit are refused on the final state."""
    user = tenant.post("/Users", user_body(1)).json()
    operations = [
        {"op": "add", "path": "emails", "value": [entry]}
        for entry in entries("emails", MAX_ENTRIES)
    ]
    response = tenant.patch(
        f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": operations}
    )
    refused(response, "invalidValue", "emails has", f"at most {MAX_ENTRIES}")
    assert tenant.get(f"/Users/{user['id']}").json() == user


def test_patch_with_more_operations_than_the_limit_is_400_and_changes_nothing(
    tenant: Tenant,
) -> None:
    """A PATCH of thousands of operations (seconds of work) is refused on its size alone."""
    user = tenant.post("/Users", user_body(1)).json()
    operation = {"op": "replace", "path": "displayName", "value": "Renamed"}
    many = {"schemas": [PATCH_OP], "Operations": [operation] * 10_000}
    response = tenant.patch(f"/Users/{user['id']}", many)
    refused(response, "invalidValue", f"at most {MAX_PATCH_OPERATIONS}")
    assert tenant.get(f"/Users/{user['id']}").json() == user
    enough = {"schemas": [PATCH_OP], "Operations": [operation] * MAX_PATCH_OPERATIONS}
    assert tenant.patch(f"/Users/{user['id']}", enough).status_code == 200


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "x" * (MAX_PATCH_PATH_LENGTH + 1), "value": "a"},
        {"op": "add", "path": "emails[" + " or ".join(['type eq "work"'] * 2000) + "].value"},
        {
            "op": "add",
            "value": {'emails[type eq "' + "w" * MAX_PATCH_PATH_LENGTH + '"].value': "a"},
        },
    ],
)
def test_patch_path_longer_than_the_limit_is_400_and_changes_nothing(
    tenant: Tenant, operation: dict[str, Any]
) -> None:
    """A PATCH path longer than any Entra sends (seconds of parsing) is refused on its length."""
    user = tenant.post("/Users", user_body(1)).json()
    body = {"schemas": [PATCH_OP], "Operations": [operation]}
    response = tenant.patch(f"/Users/{user['id']}", body)
    refused(response, "invalidValue", f"longer than {MAX_PATCH_PATH_LENGTH} characters")
    assert len(response.json()["detail"]) < 400
    assert tenant.get(f"/Users/{user['id']}").json() == user


@pytest.mark.parametrize("parameter", ["attributes", "excludedAttributes"])
def test_more_attribute_names_than_the_limit_is_400_invalid_value(
    tenant: Tenant, parameter: str
) -> None:
    """Naming 10,000 attributes (about a minute of work once) is refused at once."""
    user = tenant.post("/Users", user_body(1)).json()
    names = ",".join(["id"] * 10_000)
    for path in ("/Users", f"/Users/{user['id']}"):
        response = tenant.get(path, params={parameter: names})
        refused(response, "invalidValue", f"at most {MAX_ATTRIBUTE_NAMES}")
    many = ",".join(["userName", "emails.value"] * (MAX_ATTRIBUTE_NAMES // 2))
    assert tenant.get("/Users", params={parameter: many}).status_code == 200


def test_attribute_name_longer_than_the_limit_is_400_invalid_value(tenant: Tenant) -> None:
    """An attribute name longer than any the schema has is refused, quoted only in part."""
    name = "urn:" + "x" * MAX_ATTRIBUTE_NAME_LENGTH + ":userName"
    response = tenant.get("/Users", params={"attributes": f"userName,{name}"})
    refused(response, "invalidValue", f"longer than {MAX_ATTRIBUTE_NAME_LENGTH}")
    assert len(response.json()["detail"]) < 400


@pytest.mark.parametrize("number", ["+10", "+123", "+4412", "+1425555010", "+999999999999999"])
def test_phone_number_impossible_for_its_country_code_is_400(tenant: Tenant, number: str) -> None:
    """An E.164-shaped number too short or long for its country code is refused as not E.164."""
    body = user_body(1, phoneNumbers=[{"type": "mobile", "value": number}])
    refused(tenant.post("/Users", body), "invalidValue", "must be in E.164 format")


@pytest.mark.parametrize("number", ["+14255550100", "+33612345678", "+80012345678"])
def test_possible_e164_phone_number_is_accepted(tenant: Tenant, number: str) -> None:
    """A number of a length its country code allows is stored as sent."""
    body = user_body(1, phoneNumbers=[{"type": "mobile", "value": number}])
    response = tenant.post("/Users", body)
    assert response.status_code == 201, response.text
    assert response.json()["phoneNumbers"][0]["value"] == number


def test_error_details_quote_only_an_excerpt_of_a_huge_value(tenant: Tenant) -> None:
    """A 4,000-character attribute name in a filter is quoted in part, not whole."""
    response = get_users(tenant, filter="a" * 4000 + ' eq "x"')
    refused(response, "invalidFilter")
    assert "a" * 100 not in response.json()["detail"]
