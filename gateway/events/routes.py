"""Admin API of the event history and feed: parse, read, shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.events import service as events
from gateway.events.export import csv_download
from gateway.events.models import EventPage, FeedPage
from gateway.events.service import EventFilter
from gateway.web.auth import require_operator
from gateway.web.errors import InvalidValue, NotFound
from gateway.web.openapi import ACCOUNT, Header, Operation, Param
from gateway.web.params import MAX_INT, query_datetime, query_int
from gateway.web.responses import model_response

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]
MAX_PAGE = 500


def _event_filter(request: Request) -> EventFilter:
    return events.event_filter(
        request.query_params,
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

    return model_response(await state.db.query(_in_account(read), account_id))


async def export_events(request: Request) -> Response:
    state = require_operator(request)
    account_id = request.path_params["account_id"]
    criteria = _event_filter(request)
    rows = await state.db.query(
        _in_account(lambda conn: events.history_rows(conn, account_id, criteria)), account_id
    )
    return csv_download(account_id, rows)


async def read_feed(request: Request) -> Response:
    state = require_operator(request)
    after = request.query_params.get("after", "0")
    try:
        events.parse_position(after)
    except ValueError as exc:
        raise InvalidValue(
            "after must be a cursor the feed returned (next_cursor), or 0 to start."
        ) from exc
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    account_id = request.path_params["account_id"]
    page = await state.db.query(
        _in_account(lambda conn: events.feed_page(conn, account_id, after=after, limit=limit)),
        account_id,
    )
    return model_response(page)


# The document offers the part of what ``query_datetime`` accepts that RFC 3339 names: a
# date-time or a date whose UTC value falls within years 1 to 9999 (the parser also takes
# other ISO 8601 spellings). The pattern bars the RFC 3339 values Python cannot hold:
# year 0, a leap second, and times on the first or last day that an offset pushes out.
DATE_TIME_LIMITS = "^(?!0000|0001-01-01[Tt].*\\+(?!00:00)|9999-12-31[Tt].*-(?!00:00)|.{17}60)"


def _date_time(name: str, description: str) -> Param:
    return Param(
        name,
        f"{description}: an RFC 3339 date-time, or a date (its midnight UTC), within years "
        "1 to 9999 in UTC. Empty or out of range is answered 400.",
        {
            "type": "string",
            "maxLength": 64,
            "pattern": DATE_TIME_LIMITS,
            "anyOf": [{"format": "date-time"}, {"format": "date"}],
        },
    )


_FILTERS = (
    Param("action", "Create, Edit or Delete", {"type": "string", "enum": list(events.ACTIONS)}),
    Param("asset", "e.g. User, Account, Integration; empty means any"),
    Param("actor", "Actor name (e.g. SCIM) or actor id; empty means any"),
    Param(
        "event_type",
        "The category: Provisioning, Admin, Messaging or Presence; empty means any",
    ),
    _date_time("since", "Events at or after this time"),
    _date_time("until", "Events before this time"),
)
CSV_FILE = Header(
    "Content-Disposition",
    "Names the download events-ACCOUNT_ID.csv.",
    {"type": "string", "pattern": '^attachment; filename="events-[^"]+[.]csv"$'},
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
            headers=(CSV_FILE,),
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
                    "Cursor of the last event read (next_cursor; 0 to start)",
                    {"type": "string", "pattern": events.FEED_POSITION.pattern},
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
