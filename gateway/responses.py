"""Response helpers and the single place where errors become responses."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, RateLimited
from observability.logging import get_logger

SCIM_MEDIA_TYPE = "application/scim+json"
SCIM_ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_PATH_PREFIX = "/scim/"

log = get_logger("gateway.errors")


def json_response(
    content: Any,
    status_code: int = 200,
    *,
    media_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A JSON response serialised with orjson (UTC datetimes as ISO 8601)."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        media_type=media_type,
        headers=headers,
    )


def scim_response(
    content: Any, status_code: int = 200, *, headers: dict[str, str] | None = None
) -> Response:
    """A SCIM response (``application/scim+json``)."""
    return json_response(content, status_code, media_type=SCIM_MEDIA_TYPE, headers=headers)


def error_body(request: Request, status: int, detail: str, scim_type: str | None, code: str) -> Any:
    """The error document for ``request``: SCIM's under SCIM URLs, a JSON problem elsewhere."""
    if request.url.path.startswith(SCIM_PATH_PREFIX):
        body: dict[str, Any] = {
            "schemas": [SCIM_ERROR_SCHEMA],
            "status": str(status),
            "detail": detail,
        }
        if scim_type:
            body["scimType"] = scim_type
        return body
    return {"error": code, "detail": detail, "status": status}


def media_type_for(request: Request) -> str:
    """The error media type of ``request``'s endpoint."""
    return SCIM_MEDIA_TYPE if request.url.path.startswith(SCIM_PATH_PREFIX) else "application/json"


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    """Answer a ``GatewayError`` with its status and actionable detail."""
    assert isinstance(exc, GatewayError)
    if isinstance(exc, RateLimited):
        log.warning("rate_limited", route=request.scope.get("route_template"))
    body = error_body(request, exc.status, exc.detail, exc.scim_type, exc.code)
    return json_response(body, exc.status, media_type=media_type_for(request), headers=exc.headers)


_HTTP_DETAILS = {
    404: "No such endpoint. SCIM endpoints live under the tenant URL (…/scim/v2/ACCOUNT_ID); "
    "the admin API under /api/v1.",
    405: "This endpoint does not accept that HTTP method.",
}


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Answer Starlette's own routing errors (404, 405) in the same shapes."""
    assert isinstance(exc, HTTPException)
    detail = _HTTP_DETAILS.get(exc.status_code, str(exc.detail))
    body = error_body(request, exc.status_code, detail, None, f"http_{exc.status_code}")
    return json_response(
        body, exc.status_code, media_type=media_type_for(request), headers=exc.headers
    )


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    """A bug: log it (with the request id) and answer 500 without leaking internals."""
    route = request.scope.get("route_template")
    if isinstance(exc, DBAPIError):
        # The database's own message can quote row values (PostgreSQL's "Key (...)=(...)"):
        # log where it happened and what kind of error, not the message.
        log.error(
            "unhandled_error",
            route=route,
            error=type(exc.orig).__name__,
            sqlstate=getattr(exc.orig, "sqlstate", None),
            traceback="".join(traceback.format_tb(exc.__traceback__)),
        )
    else:
        log.error("unhandled_error", exc_info=exc, route=route)
    body = error_body(
        request,
        500,
        "Internal error; the gateway logged it with this request's id.",
        None,
        "internal_error",
    )
    return json_response(body, 500, media_type=media_type_for(request))
