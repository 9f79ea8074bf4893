"""The discovery documents: /ServiceProviderConfig, /ResourceTypes and /Schemas.

They are derived from the wire models and pruned to ``SUPPORTED``, so they advertise
exactly what the store keeps. They are built once per app; only ``meta.location``
depends on the account, and is filled in per request.
"""

from __future__ import annotations

import copy
from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Filter,
    Patch,
    ResourceType,
    SchemaExtension,
    ServiceProviderConfig,
    Sort,
    User,
)

from gateway.scim.schema import (
    ADDRESS_TYPES,
    CLOUDLINK_USER,
    CORE_USER,
    EMAIL_TYPES,
    ENTERPRISE_USER,
    PHONE_TYPES,
    SUPPORTED,
    CloudLinkUser,
)

_CANONICAL_TYPES = {"emails": EMAIL_TYPES, "phoneNumbers": PHONE_TYPES, "addresses": ADDRESS_TYPES}

# CloudLink's required attributes, as far as a schema can say it: a name is required,
# and displayName is the one Entra maps by default (name.givenName or name.familyName
# alone are accepted too, as the description says).
REQUIRED_CORE = ("userName", "displayName", "emails")

# An email or phone number entry is meaningless without its value, and CloudLink tells
# work from other addresses by type.
_REQUIRED_SUBS = {"emails": {"value", "type"}, "phoneNumbers": {"value", "type"}}

_DESCRIPTIONS = {
    "displayName": "Required unless name.givenName or name.familyName is given.",
    "userName": "Unique within the account (case-insensitive). Entra: userPrincipalName.",
    "emails": "A work email is required; types work and other; each address unique in the account.",
    "phoneNumbers": "E.164 (+ then up to 15 digits); types mobile, work and other; each number "
    "unique in the account.",
    "extension": "The user's phone extension; unique within the account.",
    "loginId": "The id the user signs in to CloudLink with; unique within the account.",
}


def _prune_attributes(
    attributes: list[dict[str, Any]], spec: dict[str, set[str] | None]
) -> list[dict[str, Any]]:
    kept = []
    for attribute in attributes:
        name = attribute["name"]
        if name not in spec:
            continue
        subs = spec[name]
        if subs is not None and attribute.get("subAttributes"):
            attribute["subAttributes"] = [
                sub for sub in attribute["subAttributes"] if sub["name"] in subs
            ]
            for sub in attribute["subAttributes"]:
                if sub["name"] == "type" and name in _CANONICAL_TYPES:
                    sub["canonicalValues"] = list(_CANONICAL_TYPES[name])
                if name in _REQUIRED_SUBS and sub["name"] in _REQUIRED_SUBS[name]:
                    sub["required"] = True
        if name in _DESCRIPTIONS:
            attribute["description"] = _DESCRIPTIONS[name]
        kept.append(attribute)
    return kept


def _schema_document(model: Any, urn: str, name: str, description: str) -> dict[str, Any]:
    document: dict[str, Any] = model.to_schema().model_dump(
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE
    )
    document["attributes"] = _prune_attributes(document["attributes"], SUPPORTED[urn])
    document["name"] = name
    document["description"] = description
    if urn == CORE_USER:
        for attribute in document["attributes"]:
            if attribute["name"] in REQUIRED_CORE:
                attribute["required"] = True
            if attribute["name"] == "userName":
                attribute["uniqueness"] = "server"
    document.setdefault("meta", {})
    document["meta"]["resourceType"] = "Schema"
    return document


def _build_schemas() -> list[dict[str, Any]]:
    return [
        _schema_document(User, CORE_USER, "User", "CloudLink user"),
        _schema_document(EnterpriseUser, ENTERPRISE_USER, "EnterpriseUser", "Enterprise user"),
        _schema_document(
            CloudLinkUser, CLOUDLINK_USER, "CloudLinkUser", "CloudLink extension and login id"
        ),
    ]


def _build_resource_types() -> list[dict[str, Any]]:
    resource_type = ResourceType(
        id="User",
        name="User",
        description="CloudLink users provisioned from Entra ID",
        endpoint="/Users",
        schema_=CORE_USER,
        schema_extensions=[
            SchemaExtension(schema_=ENTERPRISE_USER, required=False),
            SchemaExtension(schema_=CLOUDLINK_USER, required=False),
        ],
    )
    document: dict[str, Any] = resource_type.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    document["meta"] = {"resourceType": "ResourceType"}
    return [document]


def _build_service_provider_config(max_results: int) -> dict[str, Any]:
    config = ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=max_results),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type="oauthbearertoken",
                name="OAuth Bearer Token",
                description="The secret token generated for the account's Azure AD Sync "
                "integration, sent as 'Authorization: Bearer <token>'.",
                primary=True,
            )
        ],
    )
    document: dict[str, Any] = config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    document["meta"] = {"resourceType": "ServiceProviderConfig"}
    return document


class Discovery:
    """The discovery documents of one app, with per-account locations filled on demand."""

    def __init__(self, max_results: int) -> None:
        self._config = _build_service_provider_config(max_results)
        self._resource_types = _build_resource_types()
        self._schemas = _build_schemas()

    def service_provider_config(self, base: str) -> dict[str, Any]:
        """The ServiceProviderConfig document for the tenant URL ``base``."""
        document = copy.deepcopy(self._config)
        document["meta"]["location"] = f"{base}/ServiceProviderConfig"
        return document

    def resource_types(self, base: str) -> list[dict[str, Any]]:
        """Every ResourceType document (User only)."""
        documents = copy.deepcopy(self._resource_types)
        for document in documents:
            document["meta"]["location"] = f"{base}/ResourceTypes/{document['id']}"
        return documents

    def schemas(self, base: str) -> list[dict[str, Any]]:
        """Every Schema document: core User, enterprise extension, CloudLink extension."""
        documents = copy.deepcopy(self._schemas)
        for document in documents:
            document["meta"]["location"] = f"{base}/Schemas/{document['id']}"
        return documents
