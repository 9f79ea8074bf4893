"""Admin API handlers: parse, call a service function, shape the response."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from importlib.metadata import version
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import service as accounts
from gateway.api import models
from gateway.api.auth import require_operator
from gateway.api.openapi import Operation, Param, build_openapi
from gateway.bodies import read_body
from gateway.errors import InvalidSyntax, InvalidValue
from gateway.events import service as events
from gateway.events.service import OPERATOR_API, EventFilter
from gateway.hygiene import reject_nul
from gateway.responses import json_response
from gateway.routing import TemplateRoute
from gateway.services import Services, services
from gateway.timeparse import parse_iso8601

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]
API = "/api/v1"
ACCOUNT = API + "/accounts/{account_id}"
MAX_PAGE = 500


async def _parse(request: Request, model: type[M]) -> M:
    try:
        raw = orjson.loads(await read_body(request))
    except orjson.JSONDecodeError as exc:
        raise InvalidSyntax(f"The body is not valid JSON: {exc}.") from exc
    reject_nul(raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidValue(detail) from exc


def _operator(request: Request) -> Services:
    found = services(request)
    require_operator(request, found)
    return found


def _datetime(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return parse_iso8601(raw)
    except ValueError:
        raise InvalidValue(
            f"{name} must be an ISO 8601 date-time, e.g. 2026-01-31T00:00:00Z."
        ) from None


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidValue(f"{name} must be an integer.") from None
    if not low <= value <= high:
        raise InvalidValue(f"{name} must be between {low} and {high}.")
    return value


def _event_filter(request: Request) -> EventFilter:
    action = request.query_params.get("action")
    if action and action not in events.ACTIONS:
        raise InvalidValue(f"action must be one of {', '.join(events.ACTIONS)}.")
    return EventFilter(
        action=action,
        asset=request.query_params.get("asset"),
        actor=request.query_params.get("actor"),
        event_type=request.query_params.get("event_type"),
        since=_datetime(request, "since"),
        until=_datetime(request, "until"),
    )


async def list_accounts(request: Request) -> Response:
    found = _operator(request)
    items = await found.db.run(accounts.list_accounts, found.db)
    return json_response({"items": items})


async def create_account(request: Request) -> Response:
    found = _operator(request)
    body = await _parse(request, models.AccountCreate)
    account = await found.db.run(
        partial(accounts.create_account, found.db, name=body.name, actor=OPERATOR_API)
    )
    return json_response(account, 201)


async def get_account(request: Request) -> Response:
    found = _operator(request)
    account = await found.db.run(
        partial(accounts.get_account, found.db, account_id=request.path_params["account_id"])
    )
    return json_response(account)


async def update_account(request: Request) -> Response:
    found = _operator(request)
    body = await _parse(request, models.AccountUpdate)
    account = await found.db.run(
        partial(
            accounts.rename_account,
            found.db,
            account_id=request.path_params["account_id"],
            name=body.name,
            actor=OPERATOR_API,
        )
    )
    return json_response(account)


async def list_integrations(request: Request) -> Response:
    found = _operator(request)
    items = await found.db.run(
        partial(
            accounts.list_integrations,
            found.db,
            account_id=request.path_params["account_id"],
            public_url=found.settings.public_url,
        )
    )
    return json_response({"items": items})


async def add_integration(request: Request) -> Response:
    found = _operator(request)
    body = await _parse(request, models.IntegrationAdd)
    item = await found.db.run(
        partial(
            accounts.add_integration,
            found.db,
            account_id=request.path_params["account_id"],
            kind=body.kind,
            actor=OPERATOR_API,
            public_url=found.settings.public_url,
        )
    )
    return json_response(item, 201)


async def remove_integration(request: Request) -> Response:
    found = _operator(request)
    await found.db.run(
        partial(
            accounts.remove_integration,
            found.db,
            account_id=request.path_params["account_id"],
            kind=request.path_params["kind"],
            actor=OPERATOR_API,
        )
    )
    return Response(status_code=204)


async def generate_keys(request: Request) -> Response:
    found = _operator(request)
    keys = await found.db.run(
        partial(
            accounts.generate_scim_keys,
            found.db,
            account_id=request.path_params["account_id"],
            actor=OPERATOR_API,
            public_url=found.settings.public_url,
        )
    )
    return json_response(
        {"tenant_url": keys.tenant_url, "secret_token": keys.secret_token},
        headers={"Cache-Control": "no-store"},
    )


def _history(
    found: Services, account_id: str, criteria: EventFilter, before: int | None, limit: int
) -> dict[str, Any]:
    with found.db.read() as conn:
        accounts.require_account(conn, account_id)
        items, next_cursor = events.history_page(
            conn, account_id, criteria, before=before, limit=limit
        )
    return {"items": items, "next_cursor": next_cursor}


async def list_events(request: Request) -> Response:
    found = _operator(request)
    criteria = _event_filter(request)
    limit = _int(request, "limit", 50, 1, MAX_PAGE)
    cursor = request.query_params.get("cursor")
    before = _int(request, "cursor", 0, 1, 2**62) if cursor else None
    page = await found.db.run(
        _history, found, request.path_params["account_id"], criteria, before, limit
    )
    return json_response(page)


CSV_COLUMNS = (
    "event_id",
    "event_date",
    "actor_name",
    "actor_id",
    "action",
    "event_type",
    "asset",
    "asset_id",
    "type",
    "properties_changed",
    "details",
)


def _cell(value: str) -> str:
    """Neutralise spreadsheet formulas in exported text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv(found: Services, account_id: str, criteria: EventFilter) -> str:
    with found.db.read() as conn:
        accounts.require_account(conn, account_id)
        rows = events.history_rows(conn, account_id, criteria)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.id,
                row.occurred_at.isoformat(),
                _cell(row.actor_name),
                _cell(row.actor_id or ""),
                row.action,
                row.event_type,
                row.asset,
                _cell(row.asset_id or ""),
                row.type,
                orjson.dumps(row.properties_changed).decode(),
                orjson.dumps(row.details).decode(),
            ]
        )
    return out.getvalue()


async def export_events(request: Request) -> Response:
    found = _operator(request)
    account_id = request.path_params["account_id"]
    text = await found.db.run(_csv, found, account_id, _event_filter(request))
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="events-{account_id}.csv"'},
    )


def _feed(found: Services, account_id: str, after: int, limit: int) -> dict[str, Any]:
    with found.db.read() as conn:
        accounts.require_account(conn, account_id)
        items, next_cursor = events.feed_page(conn, account_id, after=after, limit=limit)
    return {"items": items, "next_cursor": next_cursor}


async def read_feed(request: Request) -> Response:
    found = _operator(request)
    after = _int(request, "after", 0, 0, 2**62)
    limit = _int(request, "limit", 100, 1, MAX_PAGE)
    page = await found.db.run(_feed, found, request.path_params["account_id"], after, limit)
    return json_response(page)


_FILTERS = (
    Param("action", "Create, Edit or Delete"),
    Param("asset", "e.g. User, Account, Integration"),
    Param("actor", "Actor name (e.g. SCIM) or actor id"),
    Param("event_type", "e.g. Provisioning, Admin"),
    Param(
        "since", "Events at or after this ISO 8601 time", {"type": "string", "format": "date-time"}
    ),
    Param("until", "Events before this ISO 8601 time", {"type": "string", "format": "date-time"}),
)

OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation("GET", API + "/accounts", "List accounts", response=models.AccountList),
        list_accounts,
    ),
    (
        Operation(
            "POST",
            API + "/accounts",
            "Create an account",
            201,
            models.AccountCreate,
            models.AccountOut,
        ),
        create_account,
    ),
    (Operation("GET", ACCOUNT, "Get an account", response=models.AccountOut), get_account),
    (
        Operation(
            "PATCH",
            ACCOUNT,
            "Rename an account",
            body=models.AccountUpdate,
            response=models.AccountOut,
        ),
        update_account,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/integrations",
            "List an account's integrations",
            response=models.IntegrationList,
        ),
        list_integrations,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/integrations",
            "Add an integration",
            201,
            models.IntegrationAdd,
            models.IntegrationOut,
        ),
        add_integration,
    ),
    (
        Operation(
            "DELETE",
            ACCOUNT + "/integrations/{kind}",
            "Remove an integration (Azure AD Sync: revokes the SCIM token)",
            204,
        ),
        remove_integration,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/integrations/azure_ad_sync/keys",
            "Generate SCIM keys (the previous token stops working)",
            response=models.ScimKeysOut,
        ),
        generate_keys,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/events",
            "Event history, newest first",
            response=models.EventPage,
            query=(
                *_FILTERS,
                Param("cursor", "next_cursor of the previous page"),
                Param("limit", "1 to 500, default 50", {"type": "integer"}),
            ),
        ),
        list_events,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/events.csv",
            "Export the event history as CSV",
            media_type="text/csv",
            query=_FILTERS,
        ),
        export_events,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/feed",
            "The account's events in commit order",
            response=models.FeedPage,
            query=(
                Param("after", "Cursor of the last event read (0 to start)", {"type": "integer"}),
                Param("limit", "1 to 500, default 100", {"type": "integer"}),
            ),
        ),
        read_feed,
    ),
]


async def openapi(request: Request) -> Response:
    document = build_openapi([op for op, _ in OPERATIONS], version=version("cloudlink-gateway"))
    return json_response(document)


routes = [TemplateRoute(op.path, handler, methods=[op.method]) for op, handler in OPERATIONS]
routes.append(TemplateRoute(API + "/openapi.json", openapi, methods=["GET"]))
