"""Admin API of the event history and feed: parse, read, shape."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.events import service as events
from gateway.events.models import EventPage, FeedPage
from gateway.events.service import EventFilter
from gateway.web.auth import require_operator
from gateway.web.errors import InvalidValue, NotFound
from gateway.web.openapi import ACCOUNT, Operation, Param
from gateway.web.params import MAX_INT, query_datetime, query_int
from gateway.web.responses import json_response

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]
MAX_PAGE = 500


def _event_filter(request: Request) -> EventFilter:
    action = request.query_params.get("action")
    if action is not None and action not in events.ACTIONS:
        raise InvalidValue(f"action must be one of {', '.join(events.ACTIONS)}.")
    return EventFilter(
        action=action,
        asset=request.query_params.get("asset") or None,
        actor=request.query_params.get("actor") or None,
        event_type=request.query_params.get("event_type") or None,
        since=query_datetime(request, "since"),
        until=query_datetime(request, "until"),
    )


def _in_account(read: Callable[[Connection], T]) -> Callable[[Connection, str], T]:
    """``read`` for an account that must exist (404 otherwise)."""

    def checked(conn: Connection, account_id: str) -> T:
        if not events.account_exists(conn, account_id):
            raise NotFound(f"No account {account_id!r}.")
        return read(conn)

    return checked


def _model(model: BaseModel) -> Response:
    return json_response(model.model_dump(mode="json"))


async def list_events(request: Request) -> Response:
    state = require_operator(request)
    criteria = _event_filter(request)
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)
    before = (
        query_int(request, "cursor", 0, 1, MAX_INT) if "cursor" in request.query_params else None
    )
    account_id = request.path_params["account_id"]

    def read(conn: Connection) -> EventPage:
        items, next_cursor = events.history_page(
            conn, account_id, criteria, before=before, limit=limit
        )
        return EventPage(items=items, next_cursor=next_cursor)

    return _model(await state.db.query(_in_account(read), account_id))


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


def _csv(rows: list[Any]) -> str:
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
    state = require_operator(request)
    account_id = request.path_params["account_id"]
    criteria = _event_filter(request)
    rows = await state.db.query(
        _in_account(lambda conn: events.history_rows(conn, account_id, criteria)), account_id
    )
    return Response(
        _csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="events-{account_id}.csv"'},
    )


async def read_feed(request: Request) -> Response:
    state = require_operator(request)
    after = query_int(request, "after", 0, 0, MAX_INT)
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    account_id = request.path_params["account_id"]
    page = await state.db.query(
        _in_account(lambda conn: events.feed_page(conn, account_id, after=after, limit=limit)),
        account_id,
    )
    return _model(page)


_FILTERS = (
    Param("action", "Create, Edit or Delete", {"type": "string", "enum": list(events.ACTIONS)}),
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
        Operation(
            "GET",
            ACCOUNT + "/events",
            "Event history, newest first",
            response=EventPage,
            query=(
                *_FILTERS,
                Param(
                    "cursor",
                    "next_cursor of the previous page",
                    {"type": "integer", "minimum": 1, "maximum": MAX_INT},
                ),
                Param(
                    "limit",
                    "1 to 500, default 50",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                ),
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
            response=FeedPage,
            query=(
                Param(
                    "after",
                    "Cursor of the last event read (0 to start)",
                    {"type": "integer", "minimum": 0, "maximum": MAX_INT},
                ),
                Param(
                    "limit",
                    "1 to 500, default 100",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                ),
            ),
        ),
        read_feed,
    ),
]
