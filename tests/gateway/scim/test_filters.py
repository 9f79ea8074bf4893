"""Filters compiled to SQL, run on both backends against real rows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Tenant, user_body

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CLOUDLINK = "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User"


@pytest.fixture
def people(tenant: Tenant) -> dict[str, str]:
    """Three users with distinct attributes; returns name -> id."""
    bodies = {
        "alice": user_body(
            "alice",
            displayName="Alice Martin",
            active=True,
            phoneNumbers=[{"type": "mobile", "value": "+33611111111"}],
            **{
                ENTERPRISE: {"employeeNumber": "E1", "department": "Sales"},
                CLOUDLINK: {"extension": "101", "loginId": "alice"},
            },
        ),
        "bob": user_body(
            "bob",
            displayName="Bob_Stone",
            active=False,
            emails=[
                {"type": "work", "value": "bob@contoso.example"},
                {"type": "other", "value": "bob@home.example"},
            ],
        ),
        "carol": user_body("carol", displayName="Carol 100%", active=True),
    }
    ids = {}
    for name, body in bodies.items():
        response = tenant.post("/Users", body)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    return ids


def names(tenant: Tenant, people: dict[str, str], expression: str) -> list[str]:
    by_id = {v: k for k, v in people.items()}
    resources: list[dict[str, Any]] = tenant.filter(expression)["Resources"]
    return sorted(by_id[r["id"]] for r in resources)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('userName eq "USERALICE@contoso.example"', ["alice"]),
        ('userName ne "useralice@contoso.example"', ["bob", "carol"]),
        ('externalId eq "ext-bob"', ["bob"]),
        ('externalId eq "EXT-BOB"', []),
        ('displayName co "o"', ["bob", "carol"]),
        ('displayName sw "ali"', ["alice"]),
        ('displayName ew "STONE"', ["bob"]),
        ('displayName co "_"', ["bob"]),
        ('displayName co "%"', ["carol"]),
        ("active eq true", ["alice", "carol"]),
        ('active eq "False"', ["bob"]),
        ('emails[type eq "other"].value eq "BOB@home.example"', ["bob"]),
        ('emails[type eq "work" and value sw "usercarol"]', ["carol"]),
        ('emails co "home"', ["bob"]),
        ('emails.type eq "other"', ["bob"]),
        ('phoneNumbers.value eq "+33611111111"', ["alice"]),
        ("phoneNumbers pr", ["alice"]),
        (f'{ENTERPRISE}:employeeNumber eq "E1"', ["alice"]),
        (f'{ENTERPRISE}:department eq "sales"', ["alice"]),
        (f'{CLOUDLINK}:extension eq "101"', ["alice"]),
        (f'{CLOUDLINK}:loginId eq "ALICE"', ["alice"]),
        ('name.givenName eq "Givenbob"', ["bob"]),
        ('not (displayName sw "A")', ["bob", "carol"]),
        ('displayName sw "A" or externalId eq "ext-carol"', ["alice", "carol"]),
        ('active eq true and not (emails co "carol")', ["alice"]),
        ('meta.created gt "2000-01-01T00:00:00Z"', ["alice", "bob", "carol"]),
        ('meta.lastModified lt "2000-01-01T00:00:00"', []),
        (
            'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "userbob@contoso.example"',
            ["bob"],
        ),
        ("userName pr", ["alice", "bob", "carol"]),
    ],
)
def test_filter_selects_exactly_the_matching_users(
    tenant: Tenant, people: dict[str, str], expression: str, expected: list[str]
) -> None:
    """Each operator and attribute kind selects the right rows on this backend."""
    assert names(tenant, people, expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        'title eq "Boss"',
        'roles[primary eq "True"].value eq "Admin"',
        'emails[foo eq "x"]',
        "userName eq",
        'userName zz "a"',
        '"unterminated',
        "active gt true",
        'meta.created eq "yesterday"',
        'emails[type eq "work"].value[type eq "x"]',
    ],
)
def test_bad_or_unmapped_filter_is_400_invalid_filter(
    tenant: Tenant, people: dict[str, str], expression: str
) -> None:
    """A filter that cannot be honoured is refused, never widened to every user."""
    response = tenant.get("/Users", params={"filter": expression})
    assert response.status_code == 400, response.text
    assert response.json()["scimType"] == "invalidFilter"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # and binds tighter than or: alice, or (bob and something false).
        (
            'displayName eq "Alice Martin" or displayName eq "Bob_Stone" and active eq true',
            ["alice"],
        ),
        (
            'active eq true and displayName eq "Carol 100%" or displayName eq "Bob_Stone"',
            ["bob", "carol"],
        ),
        # Parentheses still win.
        (
            '(displayName eq "Alice Martin" or displayName eq "Bob_Stone") and active eq false',
            ["bob"],
        ),
        (
            'displayName eq "Bob_Stone" or displayName eq "Carol 100%" and active eq true '
            'or displayName eq "Alice Martin" and active eq false',
            ["bob", "carol"],
        ),
    ],
)
def test_and_binds_tighter_than_or(
    tenant: Tenant, people: dict[str, str], expression: str, expected: list[str]
) -> None:
    """RFC 7644 precedence: `a or b and c` is `a or (b and c)`; parentheses group first."""
    assert sorted(names(tenant, people, expression)) == expected
