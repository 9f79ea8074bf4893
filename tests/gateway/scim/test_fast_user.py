"""Entra's usual create body read without scim2-models: the same document whenever it
reads one, and every other body refused or stored exactly as scim2-models has it."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from scim2_models import Context

from gateway.scim.fast_user import fast_document
from gateway.scim.parsing import new_user_document, parse_user
from gateway.scim.rules import user_document
from gateway.scim.schema import CLOUDLINK_USER, CORE_USER, ENTERPRISE_USER
from tests.conftest import user_body

USERS_URL = "https://gateway.example/scim/v2/account/Users"

STRINGS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", " padded ", "Ünïcode", "user1@contoso.example"]),
    st.integers(),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
)
EMAILS = st.one_of(
    st.sampled_from(
        [
            "a@contoso.example",
            "User@Contoso.EXAMPLE",
            "ü@bücher.example",
            "bad",
            "",
            "a@b@c",
            "x@localhost",
            " a@contoso.example",
        ]
    ),
    STRINGS,
)
PHONES = st.one_of(st.sampled_from(["+14255550100", "+33612345678", "555", ""]), STRINGS)
BOOLEANS = st.one_of(st.booleans(), st.sampled_from(["true", "False", 1, 0, None]))


def entries(
    values: st.SearchStrategy[Any], types: list[Any], strings: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    entry = st.fixed_dictionaries(
        {"value": values},
        optional={
            "type": st.one_of(st.sampled_from(types), strings),
            "primary": st.booleans(),
        },
    )
    odd = st.fixed_dictionaries(
        {}, optional={"value": values, "type": strings, "primary": BOOLEANS, "display": strings}
    )
    return st.one_of(st.lists(entry, min_size=1, max_size=3), st.lists(odd, max_size=2), strings)


def objects(keys: list[str], strings: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.dictionaries(st.sampled_from(keys), strings, max_size=3), strings)


def bodies(strings: st.SearchStrategy[Any], booleans: st.SearchStrategy[Any]) -> Any:
    """User bodies whose simple values come from ``strings`` and ``booleans``."""
    return st.fixed_dictionaries(
        {},
        optional={
            "schemas": SCHEMAS,
            "userName": st.one_of(EMAILS, strings),
            "externalId": strings,
            "displayName": strings,
            "active": booleans,
            "title": strings,
            "locale": strings,
            "nickName": strings,
            "name": objects(["givenName", "familyName", "formatted", "GivenName", "x"], strings),
            "emails": entries(EMAILS, ["work", "other", "Work", "home"], strings),
            "phoneNumbers": entries(PHONES, ["mobile", "work", "other", "fax"], strings),
            ENTERPRISE_USER: objects(["department", "employeeNumber", "manager"], strings),
            CLOUDLINK_USER: objects(["extension", "loginId", "other"], strings),
            "UserName": strings,
            "meta": st.just({"resourceType": "User"}),
            "id": strings,
            "password": strings,
        },
    )


SCHEMAS = st.sampled_from(
    [
        [CORE_USER],
        [CORE_USER, ENTERPRISE_USER],
        [CORE_USER, ENTERPRISE_USER, CLOUDLINK_USER],
        [CORE_USER, CLOUDLINK_USER],
        [ENTERPRISE_USER],
        [],
        [CORE_USER, "urn:example:other"],
        [CORE_USER, CORE_USER],
        CORE_USER,
    ]
)
# Values of any JSON type, or of the type each attribute has.
ANY = bodies(STRINGS, BOOLEANS)
TYPED = bodies(st.text(max_size=8), st.booleans())


def over_usual(changes: dict[str, Any]) -> dict[str, Any]:
    """An Entra body with up to two of its attributes changed or added."""
    usual = user_body(
        7,
        phoneNumbers=[{"type": "mobile", "value": "+14255550100", "primary": False}],
        **{ENTERPRISE_USER: {"department": "Sales"}},
    )
    kept = [(key, value) for key, value in changes.items() if key != "schemas"]
    return {**usual, **dict(kept[:2])}


# Mostly bodies near Entra's (most are read in one pass), some anything.
MIXED = st.one_of(TYPED.map(over_usual), TYPED, ANY.map(over_usual), ANY)


def outcome(read: Any) -> Any:
    """What reading gives: the document, or the refusal's kind, scimType and detail."""
    try:
        return read()
    except Exception as exc:  # any refusal is compared, whatever its class
        return (type(exc).__name__, getattr(exc, "scim_type", None), str(exc))


@example(
    body=over_usual(
        {
            "emails": [
                {"type": "work", "value": "a@contoso.example", "primary": True},
                {"type": "other", "value": "b@contoso.example", "primary": True},
            ]
        }
    )
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=MIXED)
def test_a_create_body_gives_what_scim2_models_gives(body: dict[str, Any]) -> None:
    """Generated bodies, valid and not: the same document or the same refusal either way."""
    slow = outcome(
        lambda: user_document(
            parse_user(copy.deepcopy(body), Context.RESOURCE_CREATION_REQUEST, USERS_URL)
        )
    )
    both = outcome(lambda: new_user_document(copy.deepcopy(body), USERS_URL))
    event("accepted" if isinstance(slow, dict) else "refused")
    event("read in one pass" if fast_document(cleaned(body)) is not None else "not in one pass")
    assert both == slow


def cleaned(body: dict[str, Any]) -> dict[str, Any]:
    """As the parser hands bodies over: without meta and id."""
    return {k: v for k, v in body.items() if k not in {"meta", "id"}}


def test_entras_usual_bodies_take_the_one_pass_reading() -> None:
    """The bodies Entra sends on a create are read without scim2-models."""
    plain = user_body(1)
    enterprise = user_body(
        2,
        title="Engineer",
        phoneNumbers=[{"type": "mobile", "value": "+14255550100", "primary": False}],
        **{ENTERPRISE_USER: {"department": "Sales", "employeeNumber": "42"}},
    )
    cloudlink = user_body(
        3,
        schemas=[CORE_USER, CLOUDLINK_USER],
        **{CLOUDLINK_USER: {"extension": "1234", "loginId": "u3"}},
    )
    for body in (plain, enterprise, cloudlink):
        document = fast_document(cleaned(body))
        assert document is not None, body
        expected = user_document(parse_user(body, Context.RESOURCE_CREATION_REQUEST, USERS_URL))
        assert document == expected


def test_unusual_bodies_are_left_to_scim2_models() -> None:
    """Coercible values, other cases, unknown attributes: not read in one pass."""
    for change in (
        {"active": "true"},
        {"UserName": "x@contoso.example"},
        {"emails": [{"type": "Work", "value": "a@contoso.example"}]},
        {"nickName": "Bob"},
        {"schemas": [CORE_USER, "urn:example:other"]},
        {"schemas": [CORE_USER], ENTERPRISE_USER: {"department": "Sales"}},
        {
            "emails": [
                {"type": "work", "value": "a@contoso.example", "primary": True},
                {"type": "other", "value": "b@contoso.example", "primary": True},
            ]
        },
    ):
        assert fast_document(cleaned({**user_body(1), **change})) is None, change
