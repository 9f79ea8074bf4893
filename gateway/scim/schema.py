"""What the gateway's SCIM service supports, declared once.

``SUPPORTED`` lists every attribute CloudLink keeps. The wire model (scim2-models'
``User`` with the enterprise and CloudLink extensions) parses anything a client sends;
what is stored, returned and advertised by ``/Schemas`` is pruned to ``SUPPORTED``, so
the discovery documents can never claim more than the store holds.
"""

from __future__ import annotations

from typing import Any

from scim2_models import URN, EnterpriseUser, Extension, ScimPolicy, User

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CLOUDLINK_USER = "urn:ietf:params:scim:schemas:extension:cloudlink:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


class CloudLinkUser(Extension):
    """CloudLink's own user attributes: the phone extension and the login id."""

    __schema__ = URN(CLOUDLINK_USER)

    extension: str | None = None
    """The user's phone extension number; unique within the account."""

    login_id: str | None = None
    """The id the user signs in to CloudLink with; unique within the account."""


ScimUser = User[EnterpriseUser | CloudLinkUser]

# How much the gateway departs from the strict RFC reading, to take Entra as it is:
# attributes CloudLink does not keep are dropped instead of refused, a Remove with a
# value removes that value, and Add/Replace on a filtered path that matches nothing
# (a user's first mobile number) creates the entry.
ENTRA_POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

# Attribute name -> None (simple) or the set of supported sub-attribute names.
SUPPORTED: dict[str, dict[str, set[str] | None]] = {
    CORE_USER: {
        "userName": None,
        "name": {"formatted", "familyName", "givenName"},
        "displayName": None,
        "active": None,
        "emails": {"value", "type", "primary"},
        "phoneNumbers": {"value", "type", "primary"},
        "roles": {"value", "display", "type", "primary"},
        "addresses": {
            "formatted",
            "streetAddress",
            "locality",
            "region",
            "postalCode",
            "country",
            "type",
            "primary",
        },
    },
    ENTERPRISE_USER: {
        "employeeNumber": None,
        "costCenter": None,
        "organization": None,
        "division": None,
        "department": None,
        "manager": {"value", "$ref", "displayName"},
    },
    CLOUDLINK_USER: {"extension": None, "loginId": None},
}

EMAIL_TYPES = ("work", "other")
PHONE_TYPES = ("mobile", "work", "other")
ADDRESS_TYPES = ("work",)


def _has_data(entry: dict[str, Any]) -> bool:
    """An entry of a multi-valued attribute holds data beyond its type and primary flag.

    Entra removes a value with ``Remove phoneNumbers[type eq "work"].value``, which
    leaves ``{"type": "work"}`` behind: such an empty shell is dropped.
    """
    return any(v not in (None, "") for k, v in entry.items() if k not in {"type", "primary"})


def _prune_object(value: dict[str, Any], spec: dict[str, set[str] | None]) -> dict[str, Any]:
    pruned: dict[str, Any] = {}
    for name, subs in spec.items():
        if name not in value or value[name] is None:
            continue
        item = value[name]
        if subs is None:
            pruned[name] = item
        elif isinstance(item, list):
            entries = [{k: v for k, v in entry.items() if k in subs} for entry in item]
            entries = [entry for entry in entries if _has_data(entry)]
            if entries:
                pruned[name] = entries
        elif isinstance(item, dict):
            kept = {k: v for k, v in item.items() if k in subs}
            if kept:
                pruned[name] = kept
    return pruned


def prune_document(dumped: dict[str, Any]) -> dict[str, Any]:
    """Keep only supported attributes of a dumped user (id and meta are added on output)."""
    document = _prune_object(dumped, SUPPORTED[CORE_USER])
    if dumped.get("externalId") is not None:
        document["externalId"] = dumped["externalId"]
    schemas = [CORE_USER]
    for urn in (ENTERPRISE_USER, CLOUDLINK_USER):
        extension = dumped.get(urn)
        if isinstance(extension, dict):
            kept = _prune_object(extension, SUPPORTED[urn])
            if kept:
                document[urn] = kept
                schemas.append(urn)
    document["schemas"] = schemas
    return document


def list_response(
    resources: list[dict[str, Any]], *, total: int | None = None, start_index: int = 1
) -> dict[str, Any]:
    """A ListResponse of ``resources`` (the whole result unless ``total`` says more)."""
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources) if total is None else total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
