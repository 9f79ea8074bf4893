"""Generated filters, list queries and PATCH bodies: whatever a client sends, never a 5xx."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.scim.filter_parsing import MAX_FILTER_COMPARISONS, MAX_FILTER_DEPTH
from gateway.scim.routes import MAX_ATTRIBUTE_NAMES
from tests.conftest import Tenant, user_body

ATTRIBUTES = [
    "userName",
    "displayName",
    "externalId",
    "id",
    "active",
    "name.givenName",
    "name.formatted",
    "emails",
    "emails.value",
    "emails.type",
    "phoneNumbers.value",
    "meta.created",
    "title",
    "roles.value",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User:extension",
    "x",
    "",
]
OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "EQ", "zz"]
VALUES = st.one_of(
    st.text(max_size=12).map(lambda t: '"' + t.replace('"', "") + '"'),
    st.sampled_from(["true", "false", "null", "42", '"2026-01-01T00:00:00Z"', '"\'"', "1.5"]),
    st.text(max_size=6),
)


@st.composite
def comparisons(draw: st.DrawFn) -> str:
    attribute = draw(st.sampled_from(ATTRIBUTES))
    operator = draw(st.sampled_from(OPERATORS))
    if operator == "pr":
        return f"{attribute} pr"
    return f"{attribute} {operator} {draw(VALUES)}"


FILTERS = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or", "AND"]), inner).map(" ".join),
        inner.map(lambda f: f"not ({f})"),
        inner.map(lambda f: f"({f})"),
        st.tuples(st.sampled_from(["emails", "phoneNumbers", "roles"]), inner).map(
            lambda t: f"{t[0]}[{t[1]}]"
        ),
    ),
    max_leaves=4,
) | st.text(max_size=40)

# Comparisons the gateway can run, so that deep and long filters reach the database.
RUNNABLE = st.sampled_from(
    [
        'userName eq "a"',
        'displayName ne "x"',
        'name.formatted co "x"',
        'urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User:loginId ne "x"',
        'emails[type eq "work"].value ne "x"',
        'meta.created gt "2026-01-01T00:00:00Z"',
        "active eq true",
        "phoneNumbers pr",
    ]
)
WRAPPERS = st.sampled_from(
    [
        "not ({})",
        "({})",
        "emails[{}]",
        "{} and userName pr",
        'displayName eq "x" or ({})',
        "not (active eq true and not ({}))",
    ]
)


@st.composite
def chains(draw: st.DrawFn) -> str:
    """Up to twice the comparison bound, joined by any mix of and / or."""
    size = draw(st.integers(min_value=1, max_value=2 * MAX_FILTER_COMPARISONS))
    leaves = draw(st.lists(RUNNABLE, min_size=size, max_size=size))
    ops = draw(st.lists(st.sampled_from(["and", "or"]), min_size=size - 1, max_size=size - 1))
    return leaves[0] + "".join(f" {op} {leaf}" for op, leaf in zip(ops, leaves[1:], strict=False))


@st.composite
def nestings(draw: st.DrawFn) -> str:
    """A chain wrapped in up to three times the depth bound of groups, nots, value filters."""
    text = draw(RUNNABLE | chains())
    depth = draw(st.integers(min_value=0, max_value=3 * MAX_FILTER_DEPTH))
    for wrapper in draw(st.lists(WRAPPERS, min_size=depth, max_size=depth)):
        text = wrapper.format(text)
    return text


DEEP_OR_LONG = chains() | nestings()

PATHS = st.sampled_from(
    [
        "active",
        "displayName",
        "userName",
        "name.givenName",
        "name",
        "emails",
        "emails.value",
        'emails[type eq "work"].value',
        'emails[type eq "other"].value',
        "phoneNumbers",
        'phoneNumbers[type eq "mobile"].value',
        'roles[primary eq "True"].value',
        'addresses[type eq "work"].locality',
        "externalId",
        "id",
        "meta",
        "title",
        "x[",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
        "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User:loginId",
        "",
    ]
)
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=10),
        st.sampled_from(["True", "False", "+33612345678", "a@contoso.example"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["value", "type", "primary", "name.givenName", "displayName", "active", "emails"]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=6,
)


@st.composite
def operations(draw: st.DrawFn) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "op": draw(st.sampled_from(["add", "Add", "replace", "Replace", "remove", "Remove", "x"]))
    }
    if draw(st.booleans()):
        operation["path"] = draw(PATHS)
    if draw(st.booleans()):
        operation["value"] = draw(JSON_VALUES)
    return operation


PATCHES = st.one_of(
    st.builds(
        lambda ops: {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": ops,
        },
        st.lists(operations(), min_size=0, max_size=4),
    ),
    JSON_VALUES.map(lambda v: {"Operations": v}),
)

RELAXED = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@RELAXED
@given(expression=FILTERS)
def test_generated_filters_never_answer_5xx(tenant: Tenant, expression: str) -> None:
    """Any filter text is answered 200 or 400, never 5xx."""
    response = tenant.get("/Users", params={"filter": expression})
    assert response.status_code in (200, 400), (expression, response.text)


@RELAXED
@given(expression=DEEP_OR_LONG)
def test_deep_and_long_filters_never_answer_5xx(tenant: Tenant, expression: str) -> None:
    """Filters nested or chained past the bounds are answered 200 or 400, never 5xx."""
    response = tenant.get("/Users", params={"filter": expression})
    event(f"status {response.status_code}")
    assert response.status_code in (200, 400), (expression, response.text)


INTEGERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.integers(min_value=-3, max_value=300).map(str),
    st.sampled_from(["9" * 5000, "-" + "9" * 5000, "0" * 50 + "7", "+5", "2147483648"]),
    st.text(max_size=8),
)
NAMES = st.lists(
    st.sampled_from(
        [
            "userName",
            "emails",
            "emails.value",
            "name.givenName",
            "meta",
            "id",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User",
            "x" * 300,
        ]
    )
    | st.text(max_size=12),
    max_size=MAX_ATTRIBUTE_NAMES + 20,
).map(",".join)
LIST_QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "filter": FILTERS | DEEP_OR_LONG,
        "startIndex": INTEGERS,
        "count": INTEGERS,
        "attributes": NAMES,
        "excludedAttributes": NAMES,
    },
)


@RELAXED
@given(params=LIST_QUERIES)
def test_generated_list_queries_never_answer_5xx(tenant: Tenant, params: dict[str, str]) -> None:
    """Any filter, startIndex, count, attributes and excludedAttributes: 200 or 400, never 5xx."""
    if not hasattr(tenant, "user_id"):
        tenant.user_id = tenant.post("/Users", user_body(1)).json()["id"]  # type: ignore[attr-defined]
    response = tenant.get("/Users", params=params)
    event(f"status {response.status_code}")
    assert response.status_code in (200, 400), (params, response.text)


@RELAXED
@given(body=PATCHES)
def test_generated_patches_never_answer_5xx_nor_store_an_invalid_user(
    tenant: Tenant, body: dict[str, Any]
) -> None:
    """Any PATCH is answered 200, 400 or 409; the stored user stays readable and valid."""
    if not hasattr(tenant, "user_id"):
        tenant.user_id = tenant.post("/Users", user_body(1)).json()["id"]  # type: ignore[attr-defined]
    user_id = tenant.user_id  # type: ignore[attr-defined]
    response = tenant.patch(f"/Users/{user_id}", body)
    assert response.status_code in (200, 400, 409), (body, response.text)
    current = tenant.get(f"/Users/{user_id}")
    assert current.status_code == 200
    assert any(e.get("type") == "work" for e in current.json()["emails"])
