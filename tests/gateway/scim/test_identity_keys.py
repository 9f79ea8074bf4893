"""userName, loginId and emails are one user's whatever their case, width or surrounding spaces."""

from __future__ import annotations

import pytest

from gateway.scim.rules import MAX_VALUE_LENGTH
from tests.conftest import Tenant, user_body

CLOUDLINK = "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User"


def fullwidth(text: str) -> str:
    """``text`` with its ASCII letters and digits as their fullwidth compatibility forms."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


ALICE = "alice@contoso.example"
VARIANTS = [
    pytest.param(ALICE + " ", id="trailing-space"),
    pytest.param("\t" + ALICE, id="leading-tab"),
    pytest.param(fullwidth(ALICE), id="fullwidth"),
    pytest.param(fullwidth("ALICE") + "@Contoso.Example\u3000", id="fullwidth-upper-ideographic"),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_user_names_differing_by_spaces_or_compatibility_forms_are_one_user(
    tenant: Tenant, variant: str
) -> None:
    """A second user whose userName only differs by spaces, width or case is a 409 clash."""
    assert tenant.post("/Users", user_body(1, userName=ALICE)).status_code == 201
    response = tenant.post("/Users", user_body(2, userName=variant))
    assert response.status_code == 409, response.text
    assert response.json()["scimType"] == "uniqueness"
    assert response.json()["detail"].startswith("userName:")


@pytest.mark.parametrize("variant", VARIANTS)
def test_user_name_filter_finds_the_user_by_any_equivalent_form(
    tenant: Tenant, variant: str
) -> None:
    """``userName eq`` with a spaced, fullwidth or upper-case form finds the stored user."""
    created = tenant.post("/Users", user_body(1, userName=ALICE)).json()
    found = tenant.filter(f'userName eq "{variant}"')
    assert [r["id"] for r in found["Resources"]] == [created["id"]]


def test_stored_user_name_loses_its_surrounding_whitespace(tenant: Tenant) -> None:
    """userName is stored and returned without surrounding whitespace, otherwise as sent."""
    created = tenant.post("/Users", user_body(1, userName="  Bob@Contoso.example\t")).json()
    assert created["userName"] == "Bob@Contoso.example"
    assert tenant.get(f"/Users/{created['id']}").json()["userName"] == "Bob@Contoso.example"


def test_fullwidth_user_name_is_stored_as_sent(tenant: Tenant) -> None:
    """Normalisation makes the key only: the stored userName keeps Entra's characters."""
    created = tenant.post("/Users", user_body(1, userName=fullwidth(ALICE))).json()
    assert created["userName"] == fullwidth(ALICE)


def test_login_ids_differing_by_spaces_or_compatibility_forms_are_one_login(
    tenant: Tenant,
) -> None:
    """A loginId that only differs by spaces, width or case clashes, and a filter finds it."""
    first = tenant.post("/Users", user_body(1, **{CLOUDLINK: {"loginId": "jdoe"}})).json()
    for variant in ("jdoe ", fullwidth("JDOE")):
        response = tenant.post("/Users", user_body(2, **{CLOUDLINK: {"loginId": variant}}))
        assert response.status_code == 409, response.text
        assert response.json()["detail"].startswith(f"{CLOUDLINK}:loginId:")
        found = tenant.filter(f'{CLOUDLINK}:loginId eq "{variant}"')
        assert [r["id"] for r in found["Resources"]] == [first["id"]]
    assert first[CLOUDLINK]["loginId"] == "jdoe"


def test_login_id_ne_and_pr_keep_their_meaning(tenant: Tenant) -> None:
    """``loginId ne`` matches users without one; ``loginId pr`` only users with one."""
    with_login = tenant.post("/Users", user_body(1, **{CLOUDLINK: {"loginId": "jdoe"}})).json()
    without = tenant.post("/Users", user_body(2)).json()
    ne = tenant.filter(f'{CLOUDLINK}:loginId ne "JDOE"')
    assert [r["id"] for r in ne["Resources"]] == [without["id"]]
    present = tenant.filter(f"{CLOUDLINK}:loginId pr")
    assert [r["id"] for r in present["Resources"]] == [with_login["id"]]


def test_emails_differing_by_compatibility_forms_clash(tenant: Tenant) -> None:
    """Two users may not hold the same email in ASCII and fullwidth forms."""
    assert tenant.post("/Users", user_body(1)).status_code == 201
    taken = [{"type": "work", "value": fullwidth("user1") + "@contoso.example"}]
    response = tenant.post("/Users", user_body(2, emails=taken))
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith("emails:")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"userName": "\u0130" * 300}, id="userName"),
        pytest.param({CLOUDLINK: {"loginId": "\u0130" * 300}}, id="loginId"),
        pytest.param(
            {"emails": [{"type": "work", "value": "\ufdfa" * 30 + "@contoso.example"}]},
            id="email",
        ),
        pytest.param({"userName": "\ufdfa" * 30}, id="userName-nfkc-expansion"),
    ],
)
def test_value_longer_than_its_key_column_once_folded_is_400(
    tenant: Tenant, change: dict[str, object]
) -> None:
    """A value within 512 characters whose folded key is longer is refused, not a 5xx."""
    response = tenant.post("/Users", user_body(1, **change))
    assert response.status_code == 400, response.text
    assert response.json()["scimType"] == "invalidValue"
    assert f"longer than {MAX_VALUE_LENGTH} characters once normalized" in response.json()["detail"]
    assert tenant.filter("")["totalResults"] == 0


def test_value_of_the_longest_key_fits_on_every_backend(tenant: Tenant) -> None:
    """A userName whose folded key is exactly 512 characters is stored."""
    user_name = "\u0130" * (MAX_VALUE_LENGTH // 2)
    response = tenant.post("/Users", user_body(1, userName=user_name))
    assert response.status_code == 201, response.text
