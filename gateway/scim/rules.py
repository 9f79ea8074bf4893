"""From a SCIM user to what CloudLink stores: CloudLink's rules and the normalized record.

Everything that makes a user valid for CloudLink is checked here, on the final state of
the user (after a POST, a PUT or a whole PATCH), so every path into the store obeys the
same rules, and every refusal says how to fix the Entra mapping.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.scim.schema import (
    ADDRESS_TYPES,
    CLOUDLINK_USER,
    EMAIL_TYPES,
    ENTERPRISE_USER,
    PHONE_TYPES,
    ScimUser,
    prune_document,
)
from gateway.web.errors import InvalidValue

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_VALUE_LENGTH = 512
MAX_EXTENSION_LENGTH = 64

# Claim kinds, named after the attribute a clash is reported on.
CLAIM_ATTRIBUTES = {
    "userName": "userName",
    "email": "emails",
    "phone": "phoneNumbers",
    "extension": f"{CLOUDLINK_USER}:extension",
    "loginId": f"{CLOUDLINK_USER}:loginId",
}


def fold(value: str) -> str:
    """The comparison key of a case-insensitive string: NFC, then lowercase."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).lower())


@dataclass(frozen=True)
class MultiValue:
    """One email or phone number of a user, as indexed for filters."""

    attribute: str
    type: str | None
    value: str
    value_key: str
    primary: bool


@dataclass
class UserRecord:
    """A user as the store keeps it: indexed columns, filter values, claims, the document."""

    document: dict[str, Any]
    user_name: str
    user_name_key: str
    external_id: str | None
    display_name: str | None
    given_name: str | None
    family_name: str | None
    active: bool
    extension: str | None
    login_id: str | None
    values: list[MultiValue] = field(default_factory=list)
    claims: set[tuple[str, str]] = field(default_factory=set)

    def columns(self) -> dict[str, Any]:
        """The indexed columns of ``scim_users``."""
        return {
            "user_name": self.user_name,
            "user_name_key": self.user_name_key,
            "external_id": self.external_id,
            "display_name": self.display_name,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "active": self.active,
            "extension": self.extension,
            "login_id": self.login_id,
            "document": self.document,
        }


def _check_length(attribute: str, value: str) -> None:
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidValue(f"{attribute} is longer than {MAX_VALUE_LENGTH} characters.")


def _entries(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = document.get(name) or []
    return [entry for entry in value if isinstance(entry, dict)]


def _email_value(kind: str, value: str) -> None:
    if not EMAIL.match(value):
        raise InvalidValue(
            f'emails[type eq "{kind}"].value is not an email address (expected name@domain).'
        )
    _check_length(f'emails[type eq "{kind}"].value', value)


def _phone_value(kind: str, value: str) -> None:
    if not E164.match(value):
        raise InvalidValue(
            f'phoneNumbers[type eq "{kind}"].value must be in E.164 format: "+", the '
            "country code and the number, digits only, at most 15 (e.g. +14255550100). "
            "CloudLink does not reformat numbers: store them as E.164 in Entra, or map "
            'an expression such as Replace([mobile], , "[^+0-9]", , "", , ).'
        )


@dataclass(frozen=True)
class _MultiValued:
    """How one multi-valued attribute is checked and indexed."""

    attribute: str
    types: tuple[str, ...]
    check_value: Callable[[str, str], None]
    key: Callable[[str], str]
    unsupported_type: str


_EMAILS = _MultiValued(
    "emails",
    EMAIL_TYPES,
    _email_value,
    fold,
    'CloudLink keeps emails of type "work" and "other". Map only emails[type eq "work"].value '
    'and emails[type eq "other"].value in the Entra attribute mapping.',
)
_PHONES = _MultiValued(
    "phoneNumbers",
    PHONE_TYPES,
    _phone_value,
    str,
    'CloudLink keeps phone numbers of type "mobile", "work" and "other". Remove the mapping '
    "of that type in Entra.",
)


def _check_multi(document: dict[str, Any], spec: _MultiValued) -> list[MultiValue]:
    values = []
    for entry in _entries(document, spec.attribute):
        value = entry.get("value")
        kind = entry.get("type")
        if not value:
            raise InvalidValue(f"{spec.attribute}: every entry needs a value.")
        if kind not in spec.types:
            raise InvalidValue(
                f'{spec.attribute}: type "{kind}" is not supported; {spec.unsupported_type}'
            )
        spec.check_value(kind, value)
        values.append(
            MultiValue(spec.attribute, kind, value, spec.key(value), bool(entry.get("primary")))
        )
    return values


def _check_addresses(document: dict[str, Any]) -> None:
    for entry in _entries(document, "addresses"):
        kind = entry.get("type")
        if kind not in ADDRESS_TYPES:
            raise InvalidValue(
                f'addresses: type "{kind}" is not supported; CloudLink keeps the work address '
                'only. Map addresses[type eq "work"].* in Entra.'
            )


def to_record(user: ScimUser) -> UserRecord:
    """Check CloudLink's rules on ``user`` and build the record to store.

    Raises ``InvalidValue`` with an actionable detail when a rule is broken.
    """
    # A plain dump is six times cheaper than a SCIM-context one; ``prune_document`` keeps
    # only supported attributes (never ``password`` or other write-only ones) either way.
    dumped = user.model_dump(scim_ctx=None, mode="json", by_alias=True, exclude_none=True)
    document = prune_document(dumped)
    user_name = document.get("userName")
    if not user_name or not str(user_name).strip():
        raise InvalidValue(
            "userName is required: map it to the user's userPrincipalName in the Entra "
            "attribute mapping."
        )
    _check_length("userName", user_name)
    name = document.get("name") or {}
    display_name = document.get("displayName")
    given_name = name.get("givenName")
    family_name = name.get("familyName")
    if not (display_name or given_name or family_name):
        raise InvalidValue(
            "CloudLink requires one of displayName, name.givenName or name.familyName: keep "
            "at least one of them in the Entra attribute mapping."
        )
    for label, text in (
        ("displayName", display_name),
        ("name.givenName", given_name),
        ("name.familyName", family_name),
    ):
        if text:
            _check_length(label, text)
    emails = _check_multi(document, _EMAILS)
    if not any(v.type == "work" for v in emails):
        raise InvalidValue(
            'CloudLink requires a work email: map emails[type eq "work"].value in the Entra '
            "attribute mapping to the attribute that holds the user's email address "
            "(for example mail or userPrincipalName)."
        )
    phones = _check_multi(document, _PHONES)
    _check_addresses(document)
    cloudlink = document.get(CLOUDLINK_USER) or {}
    extension = cloudlink.get("extension")
    if extension is not None and len(extension) > MAX_EXTENSION_LENGTH:
        raise InvalidValue(
            f"{CLOUDLINK_USER}:extension is longer than {MAX_EXTENSION_LENGTH} characters."
        )
    login_id = cloudlink.get("loginId")
    if login_id is not None:
        _check_length(f"{CLOUDLINK_USER}:loginId", login_id)
    external_id = document.get("externalId")
    if external_id is not None:
        _check_length("externalId", external_id)

    user_name_key = fold(user_name)
    claims = {("userName", user_name_key)}
    claims.update(("email", v.value_key) for v in emails)
    claims.update(("phone", v.value_key) for v in phones)
    if extension:
        claims.add(("extension", extension))
    if login_id:
        claims.add(("loginId", fold(login_id)))
    return UserRecord(
        document=document,
        user_name=user_name,
        user_name_key=user_name_key,
        external_id=external_id,
        display_name=display_name,
        given_name=given_name,
        family_name=family_name,
        active=bool(document.get("active", True)),
        extension=extension,
        login_id=login_id,
        values=emails + phones,
        claims=claims,
    )


def _first(entries: list[dict[str, Any]], kind: str) -> Any:
    return next((e.get("value") for e in entries if e.get("type") == kind), None)


def normalized_user(user_id: str, document: dict[str, Any]) -> dict[str, Any]:
    """The provider-neutral CloudLink user that events and the feed carry."""
    emails = _entries(document, "emails")
    phones = _entries(document, "phoneNumbers")
    roles = _entries(document, "roles")
    primary_role = next((r for r in roles if r.get("primary")), roles[0] if roles else None)
    addresses = _entries(document, "addresses")
    name = document.get("name") or {}
    cloudlink = document.get(CLOUDLINK_USER) or {}
    return {
        "id": user_id,
        "externalId": document.get("externalId"),
        "userName": document.get("userName"),
        "active": bool(document.get("active", True)),
        "displayName": document.get("displayName"),
        "firstName": name.get("givenName"),
        "lastName": name.get("familyName"),
        "email": _first(emails, "work"),
        "otherEmail": _first(emails, "other"),
        "mobilePhone": _first(phones, "mobile"),
        "workPhone": _first(phones, "work"),
        "otherPhone": _first(phones, "other"),
        "role": primary_role.get("value") if primary_role else None,
        "extension": cloudlink.get("extension"),
        "loginId": cloudlink.get("loginId"),
        "workAddress": addresses[0] if addresses else None,
        "enterprise": document.get(ENTERPRISE_USER),
    }


def changed_properties(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """Names of the normalized properties that differ (all set ones on create/delete)."""
    keys = set(before or {}) | set(after or {})
    return sorted(
        key for key in keys if key != "id" and (before or {}).get(key) != (after or {}).get(key)
    )
