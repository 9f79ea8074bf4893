"""SCIM endpoints under the tenant URL: thin handlers over ``gateway.scim.service``.

They form one ``Surface`` (``/scim/v2``) whose errors are SCIM error documents.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, ResponseParameters
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import SCIM_PREFIX
from gateway.scim import service
from gateway.scim.auth import authenticate, read_authenticated
from gateway.scim.discovery import Discovery
from gateway.scim.errors import SCIM_ERRORS, SCIM_MEDIA_TYPE
from gateway.scim.schema import ScimUser, list_response
from gateway.web.bodies import read_json
from gateway.web.errors import (
    BadRequest,
    GatewayError,
    InvalidValue,
    NotFound,
    NotImplementedFeature,
    UnsupportedMediaType,
    shown,
)
from gateway.web.params import saturating_int
from gateway.web.responses import json_response
from gateway.web.routing import Surface, TemplateRoute
from gateway.web.state import AppState, app_state
from observability.metrics import Metrics
from storage.errors import DatabaseUnavailable
from storage.reads import Plan

Handler = Callable[[Request], Awaitable[Response]]
BASE = SCIM_PREFIX + "/{account_id}"
# The largest startIndex every backend can use as an offset (a 32-bit signed integer).
MAX_START_INDEX = 2**31 - 1
# attributes / excludedAttributes: the User schema has about 45 attribute paths, and the
# names longest in use (URN-qualified enterprise ones) are under 90 characters. Validating
# and projecting 10,000 names takes about 0.6 s per resource; 50 take about 3 ms.
MAX_ATTRIBUTE_NAMES = 50
MAX_ATTRIBUTE_NAME_LENGTH = 200

_OUTCOMES = {401: "unauthorized", 404: "not_found", 409: "conflict", 429: "rate_limited"}


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    return _OUTCOMES.get(status, "client_error" if status < 500 else "server_error")


def operation(name: str) -> Callable[[Handler], Handler]:
    """Count the handler's calls by operation and outcome."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: Request) -> Response:
            metrics: Metrics = app_state(request).metrics
            try:
                response = await handler(request)
            except GatewayError as exc:
                metrics.scim_operations.labels(name, _outcome(exc.status)).inc()
                raise
            except DatabaseUnavailable:
                metrics.scim_operations.labels(name, "unavailable").inc()
                raise
            except Exception:
                metrics.scim_operations.labels(name, "server_error").inc()
                raise
            metrics.scim_operations.labels(name, _outcome(response.status_code)).inc()
            return response

        return wrapper

    return decorate


def _int_param(request: Request, name: str, default: int) -> int:
    """A decimal integer parameter of any size; beyond 19 digits it reads as ±10**19.

    RFC 7644 §3.4.2.4 reads out-of-range values rather than refusing them (a negative
    count is 0, a startIndex below 1 is 1), so a huge one is clamped by the caller too.
    """
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return saturating_int(raw, name)


def _attribute_names(request: Request, name: str) -> str | None:
    """The raw ``attributes`` or ``excludedAttributes`` list, refused beyond its bounds.

    Checked on the text, before scim2-models parses (and later projects) every name.
    """
    raw = request.query_params.get(name)
    if not raw:
        return None
    count = raw.count(",") + 1
    if count > MAX_ATTRIBUTE_NAMES:
        raise InvalidValue(
            f"{name} names {count} attributes; the gateway accepts at most "
            f"{MAX_ATTRIBUTE_NAMES}, e.g. {name}=userName,emails."
        )
    longest = max(raw.split(","), key=len).strip()
    if len(longest) > MAX_ATTRIBUTE_NAME_LENGTH:
        raise InvalidValue(
            f"{name}: {shown(longest)!r} is longer than {MAX_ATTRIBUTE_NAME_LENGTH} "
            "characters; name attributes as the /Schemas documents do, e.g. emails.value."
        )
    return raw


def _response_parameters(request: Request) -> ResponseParameters[ScimUser] | None:
    """``attributes`` / ``excludedAttributes`` (RFC 7644 §3.9), or None when absent."""
    attributes = _attribute_names(request, "attributes")
    excluded = _attribute_names(request, "excludedAttributes")
    if not attributes and not excluded:
        return None
    try:
        return ResponseParameters[ScimUser].model_validate(
            {"attributes": attributes, "excludedAttributes": excluded}
        )
    except ValidationError as exc:
        raise InvalidValue(
            "attributes / excludedAttributes must be comma-separated attribute names, "
            f"e.g. attributes=userName,emails ({shown(str(exc.errors()[0]['msg']))})."
        ) from exc


def _project(
    parameters: ResponseParameters[ScimUser] | None, resource: dict[str, Any]
) -> dict[str, Any]:
    """Keep what ``parameters`` select of a resource (all of it without parameters)."""
    if parameters is None:
        return resource
    # The stored resource is trusted: read it without request-side checks.
    model = ScimUser.model_validate(resource)
    projected: dict[str, Any] = model.model_dump(
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=parameters
    )
    return projected


async def _body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type.lower():
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported; send application/scim+json."
        )
    return await read_json(request)


async def _tenant(request: Request) -> tuple[AppState, service.Tenant]:
    state = app_state(request)
    return state, await authenticate(request, state)


def _discovery(request: Request) -> Discovery:
    discovery: Discovery = request.state.scim_discovery
    return discovery


@operation("discovery")
async def service_provider_config(request: Request) -> Response:
    _state, tenant = await _tenant(request)
    return _scim(_discovery(request).service_provider_config(tenant.base_url))


def _scim(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(content, status_code, media_type=SCIM_MEDIA_TYPE, headers=headers)


def _one(resources: list[dict[str, Any]], key: str, what: str) -> dict[str, Any]:
    for resource in resources:
        if resource["id"] == key:
            return resource
    raise NotFound(f"No {what} {key!r}.")


async def _discovery_documents(request: Request, kind: str) -> Response:
    """A discovery collection, or one of its documents when the path names an id."""
    _state, tenant = await _tenant(request)
    documents = getattr(_discovery(request), kind)(tenant.base_url)
    if "id" in request.path_params:
        return _scim(_one(documents, request.path_params["id"], kind.replace("_", " ")))
    return _scim(list_response(documents))


@operation("discovery")
async def resource_types(request: Request) -> Response:
    return await _discovery_documents(request, "resource_types")


@operation("discovery")
async def schemas(request: Request) -> Response:
    return await _discovery_documents(request, "schemas")


@operation("list")
async def list_users(request: Request) -> Response:
    state = app_state(request)
    page_size = state.settings.scim_max_page_size

    def read(tenant: service.Tenant) -> Plan[dict[str, Any]]:
        # Runs once the token matched: every refusal below comes after a 401.
        start_index = max(1, _int_param(request, "startIndex", 1))
        if start_index > MAX_START_INDEX:
            raise InvalidValue(
                f"startIndex must be at most {MAX_START_INDEX}; page through the users with "
                "startIndex=1, then the previous startIndex plus the count returned."
            )
        count = min(max(0, _int_param(request, "count", page_size)), page_size)
        parameters = _response_parameters(request)
        result = yield from service.list_users(
            tenant,
            filter_text=request.query_params.get("filter"),
            start_index=start_index,
            count=count,
        )
        if parameters is not None:
            result["Resources"] = [_project(parameters, r) for r in result["Resources"]]
        return result

    _, result = await read_authenticated(request, state, read)
    return _scim(result)


async def _user_operation(
    request: Request,
    operation_fn: Callable[..., Awaitable[dict[str, Any]]],
    *,
    has_body: bool,
    status: int = 200,
) -> Response:
    """Authenticate, read every parameter (so bad input fails before any change), act."""
    state, tenant = await _tenant(request)
    parameters = _response_parameters(request)
    args: list[Any] = []
    if "user_id" in request.path_params:
        args.append(request.path_params["user_id"])
    if has_body:
        args.append(await _body(request))
    resource = await operation_fn(state.db, tenant, *args)
    headers = {"Location": resource["meta"]["location"]} if status == 201 else None
    return _scim(_project(parameters, resource), status, headers)


@operation("create")
async def create_user(request: Request) -> Response:
    return await _user_operation(request, service.create_user, has_body=True, status=201)


@operation("get")
async def get_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]

    def read(tenant: service.Tenant) -> Plan[dict[str, Any]]:
        parameters = _response_parameters(request)
        return _project(parameters, (yield from service.get_user(tenant, user_id)))

    _, resource = await read_authenticated(request, app_state(request), read)
    return _scim(resource)


@operation("replace")
async def replace_user(request: Request) -> Response:
    return await _user_operation(request, service.replace_user, has_body=True)


@operation("patch")
async def patch_user(request: Request) -> Response:
    return await _user_operation(request, service.patch_user, has_body=True)


@operation("delete")
async def delete_user(request: Request) -> Response:
    state, tenant = await _tenant(request)
    await service.delete_user(state.db, tenant, request.path_params["user_id"])
    return Response(status_code=204)


GROUPS_UNSUPPORTED = (
    "CloudLink does not provision groups. In the Entra enterprise app, open Provisioning > "
    "Mappings, select 'Provision Microsoft Entra ID Groups' (formerly 'Provision Azure Active "
    "Directory Groups') and set Enabled: No."
)


@operation("groups")
async def list_groups(request: Request) -> Response:
    """Entra's test connection may query /Groups: answer an empty list, never 404."""
    await _tenant(request)
    return _scim(list_response([]))


@operation("groups")
async def get_group(request: Request) -> Response:
    await _tenant(request)
    raise NotFound(f"No group {request.path_params['group_id']!r}. {GROUPS_UNSUPPORTED}")


@operation("groups")
async def write_group(request: Request) -> Response:
    await _tenant(request)
    raise BadRequest(GROUPS_UNSUPPORTED)


@operation("unsupported")
async def unsupported(request: Request) -> Response:
    await _tenant(request)
    raise NotImplementedFeature(
        "Not supported by this SCIM service (see /ServiceProviderConfig): bulk, /Me and "
        "POST .search are not offered."
    )


def _route(path: str, endpoint: Handler, methods: list[str]) -> TemplateRoute:
    return TemplateRoute(BASE + path, endpoint, methods=methods)


# Matched in order: the endpoints Entra calls on every cycle come first.
_routes = [
    _route("/Users", list_users, ["GET"]),
    _route("/Users", create_user, ["POST"]),
    _route("/Users/{user_id}", get_user, ["GET"]),
    _route("/Users/{user_id}", replace_user, ["PUT"]),
    _route("/Users/{user_id}", patch_user, ["PATCH"]),
    _route("/Users/{user_id}", delete_user, ["DELETE"]),
    _route("/Users/.search", unsupported, ["POST"]),
    _route("/ServiceProviderConfig", service_provider_config, ["GET"]),
    _route("/ResourceTypes", resource_types, ["GET"]),
    _route("/ResourceTypes/{id}", resource_types, ["GET"]),
    _route("/Schemas", schemas, ["GET"]),
    _route("/Schemas/{id}", schemas, ["GET"]),
    _route("/Groups", list_groups, ["GET"]),
    _route("/Groups", write_group, ["POST"]),
    _route("/Groups/{group_id}", get_group, ["GET"]),
    _route("/Groups/{group_id}", write_group, ["PUT", "PATCH", "DELETE"]),
    _route("/Bulk", unsupported, ["POST"]),
    _route("/Me", unsupported, ["GET", "POST", "PUT", "PATCH", "DELETE"]),
    _route("/.search", unsupported, ["POST"]),
]

surface = Surface(SCIM_PREFIX, _routes, SCIM_ERRORS)
