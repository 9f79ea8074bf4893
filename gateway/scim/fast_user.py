"""Entra's usual create body read in one pass, without building scim2-models' objects.

Entra sends the same shape on every create: userName, externalId, active, displayName,
name, work email, phone numbers, a few enterprise attributes. scim2-models validates it in
the SCIM context and the gateway dumps the model back to a dict: a third of a create's
Python time (docs/performance.md). ``fast_document`` reads that shape directly into the
dict the dump would give, and answers ``None`` for anything else: another attribute, an
attribute in another case, a value of another type (scim2-models would coerce ``"true"``),
a type value that is not in canonical case or not one CloudLink keeps, an extension
object for a schema the body does not name. Those bodies go through scim2-models as
before, so every refusal, its detail and its scimType still come from there.

Email addresses go through the validator scim2-models uses (pydantic's ``EmailStr``), which
also normalizes them (the domain in lower case). ``tests/gateway/scim/test_fast_user.py``
checks with generated bodies that whenever this accepts a body, scim2-models accepts it
and the stored document is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import EmailStr, TypeAdapter

from gateway.scim.schema import (
    CLOUDLINK_USER,
    CORE_USER,
    EMAIL_TYPES,
    ENTERPRISE_USER,
    PHONE_TYPES,
    prune_document,
)

_EMAIL = TypeAdapter(EmailStr)
# Simple string attributes; those CloudLink does not keep are dropped by prune_document.
_STRINGS = ("userName", "externalId", "displayName", "title", "preferredLanguage", "locale")
_NAME_PARTS = frozenset(
    {"formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"}
)
_ENTERPRISE = frozenset({"employeeNumber", "costCenter", "organization", "division", "department"})
_CLOUDLINK = frozenset({"extension", "loginId"})
_ENTRY_KEYS = frozenset({"value", "type", "primary"})
_EXTENSIONS = {ENTERPRISE_USER: _ENTERPRISE, CLOUDLINK_USER: _CLOUDLINK}


class _Unusual(Exception):
    """The body is not of the usual shape: scim2-models reads it."""


def fast_document(body: dict[str, Any]) -> dict[str, Any] | None:
    """The document ``prune_document`` keeps of ``body``, or None when scim2-models must
    read it. ``body`` is the cleaned body (no nulls, ``id`` and ``meta`` gone, ``schemas``
    set)."""
    try:
        return prune_document(_dumped(body))
    except _Unusual:
        return None


def _dumped(body: dict[str, Any]) -> dict[str, Any]:
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or CORE_USER not in schemas:
        raise _Unusual
    if any(urn not in (CORE_USER, ENTERPRISE_USER, CLOUDLINK_USER) for urn in schemas):
        raise _Unusual
    if not body.get("userName"):  # required: scim2-models names it in its refusal
        raise _Unusual
    dumped: dict[str, Any] = {}
    for key, value in body.items():
        if key == "schemas":
            continue
        read = _READERS.get(key)
        if read is None or (key in _EXTENSIONS and key not in schemas):
            raise _Unusual
        dumped[key] = read(value)
    return dumped


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Unusual
    return value


def _email(value: Any) -> str:
    try:
        normalized: str = _EMAIL.validate_python(_string(value))
    except ValueError as exc:
        raise _Unusual from exc
    return normalized


def _strings_object(value: Any, keys: frozenset[str]) -> dict[str, str]:
    if not isinstance(value, dict) or not value or not value.keys() <= keys:
        raise _Unusual
    return {key: _string(item) for key, item in value.items()}


def _entries(
    value: Any, types: tuple[str, ...], read: Callable[[Any], str]
) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _Unusual
    entries = []
    for entry in value:
        if not isinstance(entry, dict) or "value" not in entry or not entry.keys() <= _ENTRY_KEYS:
            raise _Unusual
        kind = entry.get("type")
        if kind not in types or not isinstance(entry.get("primary", False), bool):
            raise _Unusual
        entries.append({**entry, "value": read(entry["value"])})
    if sum(entry.get("primary") is True for entry in entries) > 1:
        raise _Unusual  # RFC 7643 allows one primary: scim2-models refuses more
    return entries


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Unusual
    return value


# Each attribute of the usual shape, and how its value is read.
_READERS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(_STRINGS, _string),
    "active": _boolean,
    "name": lambda value: _strings_object(value, _NAME_PARTS),
    "emails": lambda value: _entries(value, EMAIL_TYPES, _email),
    "phoneNumbers": lambda value: _entries(value, PHONE_TYPES, _string),
    ENTERPRISE_USER: lambda value: _strings_object(value, _ENTERPRISE),
    CLOUDLINK_USER: lambda value: _strings_object(value, _CLOUDLINK),
}
