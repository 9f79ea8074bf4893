"""From a SCIM user to what CloudLink stores: CloudLink's rules and the normalized record.

Everything that makes a user valid for CloudLink is checked here, on the final state of
the user (after a POST, a PUT or a whole PATCH), so every path into the store obeys the
same rules, and every refusal says how to fix the Entra mapping.

userName, the login id and email addresses are unique by their folded key (``fold``:
NFKC, then case folding, without surrounding whitespace), so ``alice@contoso.com``,
``Alice@Contoso.com `` and the same address in fullwidth letters are one user. Keys
stored before this rule were NFC + lower-case; no release has stored data with them,
so they are not migrated. Stored userName and loginId lose their surrounding
whitespace; otherwise values are kept as Entra sent them.

Multi-valued attributes are bounded (``MAX_ENTRIES`` each): CloudLink keeps two email
types, three phone types, one address type, and a handful of roles at most.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import phonenumbers

from gateway.folding import fold
from gateway.scim.schema import (
    ADDRESS_TYPES,
    CLOUDLINK_USER,
    EMAIL_TYPES,
    ENTERPRISE_USER,
    PHONE_TYPES,
    ScimUser,
    prune_document,
)
from gateway.web.errors import InvalidValue, shown

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_VALUE_LENGTH = 512
MAX_EXTENSION_LENGTH = 64
# Entries per multi-valued attribute (emails, phoneNumbers, addresses, roles).
MAX_ENTRIES = 10
MULTI_VALUED = ("emails", "phoneNumbers", "addresses", "roles")

# Claim kinds, named after the attribute a clash is reported on.
CLAIM_ATTRIBUTES = {
    "userName": "userName",
    "email": "emails",
    "phone": "phoneNumbers",
    "extension": f"{CLOUDLINK_USER}:extension",
    "loginId": f"{CLOUDLINK_USER}:loginId",
}


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

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "user_name",
        "user_name_key",
        "external_id",
        "display_name",
        "given_name",
        "family_name",
        "active",
        "extension",
        "login_id",
        "document",
    )

    def columns(self) -> dict[str, Any]:
        """The indexed columns of ``scim_users``."""
        return {name: getattr(self, name) for name in self.COLUMNS}


def _check_length(attribute: str, value: str) -> None:
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidValue(f"{attribute} is longer than {MAX_VALUE_LENGTH} characters.")


def _key(attribute: str, value: str) -> str:
    """The folded key of a unique value, which must fit its column too."""
    _check_length(attribute, value)
    key = fold(value)
    if len(key) > MAX_VALUE_LENGTH:
        raise InvalidValue(
            f"{attribute} is longer than {MAX_VALUE_LENGTH} characters once normalized "
            "(compatibility forms and case folding, e.g. ß as ss, can lengthen a value); "
            "shorten it in Entra."
        )
    return key


_MULTI_VALUED_BY_KEY = {name.lower(): name for name in MULTI_VALUED}


def multi_valued_name(key: str) -> str | None:
    """The multi-valued attribute a body key or PATCH path names, if any.

    Any case, with or without a URN prefix, a value filter or a sub-attribute, as
    scim2-models reads them.
    """
    attribute = key.rsplit(":", 1)[-1].split("[", 1)[0].split(".", 1)[0]
    return _MULTI_VALUED_BY_KEY.get(attribute.lower())


def check_entry_counts(document: dict[str, Any]) -> None:
    """Refuse more than ``MAX_ENTRIES`` entries of a multi-valued attribute.

    Cheap (list lengths only), so it also runs on request bodies before scim2-models
    validates each entry; on the final state it covers every PATCH too.
    """
    for key, entries in document.items():
        name = multi_valued_name(str(key))
        if name is not None and isinstance(entries, list) and len(entries) > MAX_ENTRIES:
            raise InvalidValue(
                f"{name} has {len(entries)} entries; CloudLink keeps at most {MAX_ENTRIES}. "
                f"Map fewer {name} in the Entra attribute mapping."
            )


def _entries(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = document.get(name) or []
    return [entry for entry in value if isinstance(entry, dict)]


def _email_value(kind: str, value: str) -> None:
    if not EMAIL.match(value):
        raise InvalidValue(
            f'emails[type eq "{kind}"].value is not an email address (expected name@domain).'
        )


def _is_possible_phone(value: str) -> bool:
    """An E.164 number whose length fits its country code (``+10`` or ``+1234`` do not)."""
    if not E164.match(value):
        return False
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_possible_number(number))


def _phone_value(kind: str, value: str) -> None:
    if not _is_possible_phone(value):
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
    key: Callable[[str, str], str]
    unsupported_type: str


_EMAILS = _MultiValued(
    "emails",
    EMAIL_TYPES,
    _email_value,
    _key,
    'CloudLink keeps emails of type "work" and "other". Map only emails[type eq "work"].value '
    'and emails[type eq "other"].value in the Entra attribute mapping.',
)
_PHONES = _MultiValued(
    "phoneNumbers",
    PHONE_TYPES,
    _phone_value,
    lambda _attribute, value: value,
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
                f'{spec.attribute}: type "{shown(str(kind))}" is not supported; '
                f"{spec.unsupported_type}"
            )
        spec.check_value(kind, value)
        key = spec.key(f'{spec.attribute}[type eq "{kind}"].value', value)
        values.append(MultiValue(spec.attribute, kind, value, key, bool(entry.get("primary"))))
    return values


def _check_addresses(document: dict[str, Any]) -> None:
    for entry in _entries(document, "addresses"):
        kind = entry.get("type")
        if kind not in ADDRESS_TYPES:
            raise InvalidValue(
                f'addresses: type "{shown(str(kind))}" is not supported; CloudLink keeps the '
                'work address only. Map addresses[type eq "work"].* in Entra.'
            )


def _user_name(document: dict[str, Any]) -> tuple[str, str]:
    """The userName without surrounding whitespace (so stored), and its key."""
    raw = document.get("userName")
    user_name = raw.strip() if isinstance(raw, str) else ""
    key = _key("userName", user_name) if user_name else ""
    if not key:
        raise InvalidValue(
            "userName is required: map it to the user's userPrincipalName in the Entra "
            "attribute mapping."
        )
    document["userName"] = user_name
    return user_name, key


def _login_id(cloudlink: dict[str, Any]) -> tuple[str | None, str | None]:
    """The login id without surrounding whitespace (so stored), and its key if any."""
    raw = cloudlink.get("loginId")
    if raw is None:
        return None, None
    login_id = cloudlink["loginId"] = raw.strip()
    key = _key(f"{CLOUDLINK_USER}:loginId", login_id)
    return login_id, key or None


def _extension(cloudlink: dict[str, Any]) -> str | None:
    extension: str | None = cloudlink.get("extension")
    if extension is not None and len(extension) > MAX_EXTENSION_LENGTH:
        raise InvalidValue(
            f"{CLOUDLINK_USER}:extension is longer than {MAX_EXTENSION_LENGTH} characters."
        )
    return extension


def _check_names(document: dict[str, Any]) -> None:
    name = document.get("name") or {}
    names = {
        "displayName": document.get("displayName"),
        "name.givenName": name.get("givenName"),
        "name.familyName": name.get("familyName"),
    }
    if not any(names.values()):
        raise InvalidValue(
            "CloudLink requires one of displayName, name.givenName or name.familyName: keep "
            "at least one of them in the Entra attribute mapping."
        )
    for label, text in names.items():
        if text:
            _check_length(label, text)


def _check_work_email(emails: list[MultiValue]) -> None:
    if not any(v.type == "work" for v in emails):
        raise InvalidValue(
            'CloudLink requires a work email: map emails[type eq "work"].value in the Entra '
            "attribute mapping to the attribute that holds the user's email address "
            "(for example mail or userPrincipalName)."
        )


def user_document(user: ScimUser) -> dict[str, Any]:
    """The attributes of ``user`` CloudLink keeps, as a JSON document."""
    # A plain dump is six times cheaper than a SCIM-context one; ``prune_document`` keeps
    # only supported attributes (never ``password`` or other write-only ones) either way.
    dumped = user.model_dump(scim_ctx=None, mode="json", by_alias=True, exclude_none=True)
    return prune_document(dumped)


def to_record(user: ScimUser) -> UserRecord:
    """Check CloudLink's rules on ``user`` and build the record to store."""
    return record_of(user_document(user))


def record_of(document: dict[str, Any]) -> UserRecord:
    """Check CloudLink's rules on a user's document and build the record to store.

    Raises ``InvalidValue`` with an actionable detail when a rule is broken.
    """
    check_entry_counts(document)
    user_name, user_name_key = _user_name(document)
    _check_names(document)
    emails = _check_multi(document, _EMAILS)
    _check_work_email(emails)
    phones = _check_multi(document, _PHONES)
    _check_addresses(document)
    cloudlink = document.get(CLOUDLINK_USER) or {}
    extension = _extension(cloudlink)
    login_id, login_key = _login_id(cloudlink)
    external_id = document.get("externalId")
    if external_id is not None:
        _check_length("externalId", external_id)

    claims = {("userName", user_name_key)}
    claims.update(("email", v.value_key) for v in emails)
    claims.update(("phone", v.value_key) for v in phones)
    if extension:
        claims.add(("extension", extension))
    if login_key:
        claims.add(("loginId", login_key))
    name = document.get("name") or {}
    return UserRecord(
        document=document,
        user_name=user_name,
        user_name_key=user_name_key,
        external_id=external_id,
        display_name=document.get("displayName"),
        given_name=name.get("givenName"),
        family_name=name.get("familyName"),
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
