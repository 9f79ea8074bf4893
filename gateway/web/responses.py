"""Responses, and error formats: how each surface writes an error to its callers.

A surface (the SCIM tenant URLs, the admin API, later each webhook receiver) declares
its ``ErrorFormat`` where it is mounted (``gateway.web.routing.Surface``); errors are
written by that format, found on the request's scope, never by looking at the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Scope

ERROR_FORMAT_KEY = "gateway.error_format"


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


def model_response(
    model: BaseModel, status_code: int = 200, *, headers: Mapping[str, str] | None = None
) -> Response:
    """A response body declared as a pydantic model (the shape the OpenAPI document shows).

    Fields the model marks ``exclude_if`` are left out rather than sent as null.
    """
    return json_response(model.model_dump(mode="json"), status_code, headers=headers)


@dataclass(frozen=True)
class ErrorReport:
    """An error to answer, independent of how a surface writes it."""

    status: int
    detail: str
    code: str
    scim_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Facts beside the detail, for programs (``GatewayError.fields``); the admin API's body.
    fields: Mapping[str, object] = field(default_factory=dict)


class ErrorFormat(Protocol):
    """How one surface writes its errors."""

    def render(self, error: ErrorReport) -> Response:
        """The response carrying ``error``."""


class ProblemJson:
    """The admin API's (and the default) error body: ``{"error", "detail", "status"}``."""

    def render(self, error: ErrorReport) -> Response:
        """A JSON problem."""
        body = {**error.fields, "error": error.code, "detail": error.detail, "status": error.status}
        return json_response(body, error.status, headers=error.headers)


PROBLEM_JSON = ProblemJson()


def error_format_of(scope: Scope) -> ErrorFormat:
    """The error format of the surface serving ``scope`` (problem JSON outside any)."""
    error_format: ErrorFormat = scope.get(ERROR_FORMAT_KEY, PROBLEM_JSON)
    return error_format
