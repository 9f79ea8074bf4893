"""The admin API's OpenAPI 3.1 document, built from the same tables as its routes.

Each feature lists its admin operations (``Operation``); the app builds its routes and
this document from the same list, so the two cannot drift apart. The document states
what the code enforces, no more and no less: a schema-valid request is never refused
with 400, and every status an operation can answer is listed with its body and headers
(checked by the schemathesis suite in ``tests/gateway/api``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

API = "/api/v1"
ACCOUNT = API + "/accounts/{account_id}"

# Text without NUL characters: every surface refuses a NUL in a path, query or JSON body
# with 400 (``gateway.nul``), so the document never offers one.
NUL_FREE = "^[^\\u0000]*$"
TEXT: dict[str, Any] = {"type": "string", "pattern": NUL_FREE}
# A character that is neither white space nor NUL, the same in Python and JSON Schema:
# their \s differ (\x1c-\x1f and \x85 are only Python's, \ufeff only ECMAScript's), so
# both sets are named.
SPACE_OR_NUL = "\\s\\u0000\\u001c-\\u001f\\u0085\\ufeff"
NON_SPACE = f"[^{SPACE_OR_NUL}]"

DESCRIPTION = (
    "Operator API of the gateway. Every error is a JSON problem "
    '`{"error", "detail", "status"}`. A method a path does not list is answered 405 with an '
    "`Allow` header naming the methods it does; a NUL character anywhere in the path, query "
    "or body is answered 400."
)


class Problem(BaseModel):
    """An error: a stable code, what to do about it, and the HTTP status again."""

    error: str = Field(description="Stable machine-readable code, e.g. invalid_value.")
    detail: str = Field(description="What was wrong and how to fix it.")
    status: int = Field(ge=400, le=599, description="The HTTP status of the response.")


@dataclass(frozen=True)
class Param:
    """A query or path parameter and the values the code accepts for it."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: dict(TEXT))


@dataclass(frozen=True)
class Header:
    """A header every success response of an operation carries."""

    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    """One admin API operation: everything the router and the OpenAPI document need.

    ``errors`` lists the error statuses the operation answers beyond those every
    operation can (400, 401, 503) and those its shape implies (404 for a path with
    parameters, 413 with a body). ``path_params`` describes parameters of the path
    that ``PATH_PARAMS`` does not.
    """

    method: str
    path: str
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    media_type: str = "application/json"
    query: tuple[Param, ...] = ()
    path_params: tuple[Param, ...] = ()
    headers: tuple[Header, ...] = ()
    errors: tuple[int, ...] = ()


# Path parameters shared by every feature's operations.
PATH_PARAMS = {
    "account_id": Param(
        "account_id",
        "The account's id, as returned when it was created. An unknown id is answered 404.",
        {"type": "string", "format": "uuid"},
    ),
}

_ERRORS = {
    400: "Invalid input; the detail names the parameter or field and what it accepts.",
    401: "Missing or wrong operator token, or the admin API is disabled.",
    404: "No such account, or the account has no such integration.",
    409: "Conflicts with the current state.",
    422: "Well-formed, but refused by a rule of the other side (a provider, DNS); the detail "
    "says which.",
    413: "The body is larger than GATEWAY_MAX_BODY_BYTES.",
    503: "The database is busy or out of reach; nothing was written. Retry after Retry-After.",
}
_ERROR_HEADERS = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with.",
            "required": True,
            "schema": {"type": "string", "pattern": "^Bearer "},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def error_statuses(op: Operation) -> list[int]:
    """Every error status ``op`` can answer, in ascending order."""
    statuses = {400, 401, 503, *op.errors}
    if _path_params(op.path):
        statuses.add(404)
    if op.body is not None:
        statuses.add(413)
    return sorted(statuses)


def _success(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        response["content"] = {op.media_type: {"schema": _ref(op.response, components)}}
    elif op.media_type != "application/json":
        response["content"] = {op.media_type: {"schema": {"type": "string"}}}
    if op.headers:
        response["headers"] = {
            h.name: {"description": h.description, "required": True, "schema": h.schema}
            for h in op.headers
        }
    return response


def _responses(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    problem = {"application/json": {"schema": _ref(Problem, components)}}
    responses = {str(op.status): _success(op, components)}
    for status in error_statuses(op):
        entry: dict[str, Any] = {"description": _ERRORS[status], "content": problem}
        if status in _ERROR_HEADERS:
            entry["headers"] = _ERROR_HEADERS[status]
        responses[str(status)] = entry
    return responses


def _parameter(param: Param, where: str) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": where,
        "required": where == "path",
        "description": param.description,
        "schema": param.schema,
    }


def _parameters(op: Operation) -> list[dict[str, Any]]:
    own = {p.name: p for p in op.path_params}
    path = [own.get(name) or PATH_PARAMS[name] for name in _path_params(op.path)]
    return [_parameter(p, "path") for p in path] + [_parameter(p, "query") for p in op.query]


def _operation_id(op: Operation) -> str:
    slug = op.path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    return f"{op.method.lower()}_{slug}".replace(".", "_")


def _entry(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "summary": op.summary,
        "operationId": _operation_id(op),
        "responses": _responses(op, components),
        "security": [{"operatorToken": []}],
    }
    parameters = _parameters(op)
    if parameters:
        entry["parameters"] = parameters
    if op.body is not None:
        entry["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body, components)}},
        }
    return entry


def build_openapi(operations: list[Operation], *, version: str) -> dict[str, Any]:
    """An OpenAPI document describing ``operations``."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _entry(op, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cloudlink-gateway admin API",
            "version": version,
            "description": DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of GATEWAY_ADMIN_TOKEN.",
                }
            },
        },
    }
