"""Parsing SCIM request bodies into scim2-models objects, the Entra-tolerant way.

Bodies are cleaned of what Entra sends but nobody should act on (``null`` values,
read-only ``meta`` and ``id``) and then validated under ``ENTRA_POLICY``. Validation
errors become 400s that name the attribute. A multi-valued attribute with more entries
than CloudLink keeps is refused first, on the list lengths alone: validating 10,000
emails would cost far more than refusing them. So is a PATCH of more than
``MAX_PATCH_OPERATIONS`` operations: Entra sends one per changed attribute, a few dozen at
most, while the 12,000 a 1 MiB body can hold take scim2-models 3 to 8 seconds to apply;
and a path longer than ``MAX_PATCH_PATH_LENGTH``: Entra's are under 100 characters,
while a value filter of 20,000 ``or``-ed comparisons took scim2-models 13 seconds.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from scim2_models import Context, PatchOp, SCIMException

from gateway.scim.errors import from_scim_exception
from gateway.scim.fast_user import fast_document
from gateway.scim.rules import check_entry_counts, multi_valued_name, user_document
from gateway.scim.schema import CORE_USER, ENTERPRISE_USER, ENTRA_POLICY, ScimUser
from gateway.web.errors import InvalidValue, shown

ScimPatch = PatchOp[ScimUser]
MAX_PATCH_OPERATIONS = 100
MAX_PATCH_PATH_LENGTH = 1024


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _is_manager(key: str) -> bool:
    return key.lower() in {"manager", f"{ENTERPRISE_USER.lower()}:manager"}


def _manager_object(value: Any, users_url: str) -> Any:
    """The manager as the schema wants it: {"value": id, "$ref": URI of that user}.

    Entra sends the manager's id alone, or {"value": id} without the ``$ref`` that
    RFC 7643 requires; both are completed here.
    """
    if isinstance(value, str):
        value = {"value": value}
    if isinstance(value, dict) and isinstance(value.get("value"), str) and "$ref" not in value:
        value = {**value, "$ref": f"{users_url}/{value['value']}"}
    return value


def _split_filtered_keys(operation: dict[str, Any]) -> list[dict[str, Any]]:
    """A path-less op whose value has keys like ``emails[type eq "work"].value``.

    Entra folds such paths into one path-less op under ``aadOptscim062020``; each of
    them becomes an op of its own with that path, which means the same thing.
    """
    value = operation["value"]
    filtered = [key for key in value if "[" in key]
    if not filtered:
        return [operation]
    rest = {k: v for k, v in value.items() if k not in filtered}
    split = [{**operation, "value": rest}] if rest else []
    split += [{"op": operation.get("op"), "path": key, "value": value[key]} for key in filtered]
    return split


def _entra_patch_shapes(body: dict[str, Any], users_url: str) -> dict[str, Any]:
    operations = body.get("Operations")
    if not isinstance(operations, list):
        return body
    normalized: list[Any] = []
    for operation in operations:
        if not isinstance(operation, dict):
            normalized.append(operation)
            continue
        path = operation.get("path")
        if isinstance(path, str) and _is_manager(path):
            operation["value"] = _manager_object(operation.get("value"), users_url)
        value = operation.get("value")
        if path is None and isinstance(value, dict):
            for key in list(value):
                if _is_manager(key):
                    value[key] = _manager_object(value[key], users_url)
            normalized.extend(_split_filtered_keys(operation))
        else:
            normalized.append(operation)
    body["Operations"] = normalized
    return body


def _entra_user_shapes(body: dict[str, Any], users_url: str) -> dict[str, Any]:
    extension = body.get(ENTERPRISE_USER)
    if isinstance(extension, dict) and "manager" in extension:
        extension["manager"] = _manager_object(extension["manager"], users_url)
    return body


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error["loc"] if not isinstance(p, int)) or "body"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def _scim_error_of(exc: ValidationError) -> SCIMException | None:
    for error in exc.errors():
        ctx = error.get("ctx") or {}
        if "scim_type" in ctx:
            scim_error = SCIMException(detail=str(error["msg"]))
            scim_error.status = int(ctx.get("status", 400))
            scim_error.scim_type = str(ctx["scim_type"])
            return scim_error
    return None


def _check_patch_path(path: str) -> None:
    if len(path) > MAX_PATCH_PATH_LENGTH:
        raise InvalidValue(
            f"A PATCH path is longer than {MAX_PATCH_PATH_LENGTH} characters "
            f'({shown(path)}); Entra sends paths such as emails[type eq "work"].value.'
        )


def _check_patch_size(body: dict[str, Any]) -> None:
    """Refuse too many operations, too long a path, or a value with too many entries.

    The final state's entries are checked again after the operations apply (several
    operations may add up); this keeps a huge body from reaching validation.
    """
    operations = body.get("Operations")
    if not isinstance(operations, list):
        return
    if len(operations) > MAX_PATCH_OPERATIONS:
        raise InvalidValue(
            f"The PATCH has {len(operations)} operations; the gateway applies at most "
            f"{MAX_PATCH_OPERATIONS} per request: send the changes in several requests."
        )
    for operation in operations:
        if not isinstance(operation, dict):
            continue
        path, value = operation.get("path"), operation.get("value")
        if isinstance(path, str):
            _check_patch_path(path)
        if isinstance(path, str) and isinstance(value, list):
            name = multi_valued_name(path)
            if name is not None:
                check_entry_counts({name: value})
        elif isinstance(value, dict):
            check_entry_counts(value)


def _cleaned_user(body: dict[str, Any], users_url: str) -> dict[str, Any]:
    cleaned = _entra_user_shapes(_without_nulls(body), users_url)
    check_entry_counts(cleaned)
    cleaned.pop("meta", None)
    cleaned.pop("id", None)
    cleaned.setdefault("schemas", [CORE_USER])
    return cleaned


def new_user_document(body: dict[str, Any], users_url: str) -> dict[str, Any]:
    """The document a create keeps of ``body`` (CloudLink's rules not checked yet): Entra's
    usual shape read in one pass (``fast_user``), any other through scim2-models."""
    cleaned = _cleaned_user(body, users_url)
    document = fast_document(cleaned)
    if document is not None:
        return document
    return user_document(_validated_user(cleaned, Context.RESOURCE_CREATION_REQUEST))


def parse_user(body: dict[str, Any], context: Context, users_url: str) -> ScimUser:
    """Validate a User body for creation or replacement."""
    return _validated_user(_cleaned_user(body, users_url), context)


def _validated_user(cleaned: dict[str, Any], context: Context) -> ScimUser:
    try:
        return ScimUser.model_validate(cleaned, scim_ctx=context, scim_policy=ENTRA_POLICY)
    except ValidationError as exc:
        scim_error = _scim_error_of(exc)
        if scim_error is not None and scim_error.scim_type != "invalidValue":
            raise from_scim_exception(scim_error) from exc
        raise InvalidValue(_describe(exc)) from exc


def parse_patch(body: dict[str, Any], users_url: str) -> ScimPatch:
    """Validate a PatchOp body (both of Entra's shapes)."""
    cleaned = _entra_patch_shapes(_without_nulls(body), users_url)
    _check_patch_size(cleaned)
    try:
        return ScimPatch.model_validate(
            cleaned, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=ENTRA_POLICY
        )
    except ValidationError as exc:
        scim_error = _scim_error_of(exc)
        if scim_error is not None:
            raise from_scim_exception(scim_error) from exc
        raise InvalidValue(_describe(exc)) from exc
    except SCIMException as exc:
        raise from_scim_exception(exc) from exc


def apply_patch(patch: ScimPatch, user: ScimUser) -> bool:
    """Apply ``patch`` to ``user`` in place; True when anything changed."""
    try:
        return patch.patch(user, scim_policy=ENTRA_POLICY)
    except SCIMException as exc:
        raise from_scim_exception(exc) from exc
    except ValidationError as exc:
        raise InvalidValue(_describe(exc)) from exc


def stored_user(document: dict[str, Any]) -> ScimUser:
    """Rebuild the model of a stored document (to patch it)."""
    return ScimUser.model_validate(document, scim_policy=ENTRA_POLICY)
