"""The admin API's OpenAPI 3.1 document, built from the same tables as its routes.

Each feature lists its admin operations (``Operation``); the app builds its routes and
this document from the same list, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

API = "/api/v1"
ACCOUNT = API + "/accounts/{account_id}"


class Problem(BaseModel):
    """An error."""

    error: str
    detail: str
    status: int


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    """One admin API operation: everything the router and the OpenAPI document need."""

    method: str
    path: str
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    media_type: str = "application/json"
    query: tuple[Param, ...] = ()


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build_openapi(operations: list[Operation], *, version: str) -> dict[str, Any]:
    """An OpenAPI document describing ``operations``."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    problem = {"application/json": {"schema": _ref(Problem, components)}}
    for op in operations:
        responses: dict[str, Any] = {}
        if op.response is not None:
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {op.media_type: {"schema": _ref(op.response, components)}},
            }
        elif op.media_type == "text/csv":
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        else:
            responses[str(op.status)] = {"description": op.summary}
        for status, text in (
            ("400", "Invalid input"),
            ("401", "Missing or wrong operator token"),
            ("404", "Not found"),
            ("409", "Conflict"),
        ):
            responses[status] = {"description": text, "content": problem}
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()}_{op.path.strip('/').replace('/', '_')}".replace(
                "{", ""
            )
            .replace("}", "")
            .replace(".", "_"),
            "responses": responses,
            "security": [{"operatorToken": []}],
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(op.path)
        ]
        parameters += [
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.query
        ]
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(op.body, components)}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "cloudlink-gateway admin API", "version": version},
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


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
