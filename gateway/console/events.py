"""An account's event history: the vendor guide's filters (actor, action, asset, type,
time range), paging, and the CSV export of the same filters, by the admin API's reader
and writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import service as accounts
from gateway.accounts.models import AccountOut
from gateway.console.guard import signed_in
from gateway.console.pages import Console
from gateway.console.views import ACCOUNT, account_page
from gateway.events import service as events
from gateway.events.export import csv_download
from gateway.events.models import EventOut
from gateway.events.service import ACTIONS
from gateway.web.errors import InvalidValue
from gateway.web.routing import TemplateRoute

EVENTS_PER_PAGE = 50
CATEGORIES = ("Provisioning", "Admin", "Messaging", "Presence")
ASSETS = (
    "Account",
    "Integration",
    "User",
    "Channel",
    "Conversation",
    "Message",
    "Contact",
    "Endpoint",
    "Outbox",
    "Presence monitor",
    "Presence",
)


def _local_time(raw: str, offset_minutes: int, name: str) -> datetime | None:
    """A ``datetime-local`` value, in the browser's zone (``tz``: minutes east of UTC)."""
    if not raw:
        return None
    try:
        naive = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidValue(f"{name} must be a date and time, e.g. 2026-01-31T09:00.") from None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    return (naive - timedelta(minutes=offset_minutes)).replace(tzinfo=UTC)


def _event_criteria(console: Console) -> tuple[events.EventFilter, dict[str, str]]:
    params = console.request.query_params
    shown = {
        name: params.get(name, "")[:200]
        for name in ("actor", "action", "asset", "event_type", "since", "until", "tz")
    }
    tz = shown["tz"]
    offset = int(tz) if tz.lstrip("-").isdigit() and len(tz) <= 5 else 0
    if abs(offset) > 18 * 60:
        offset = 0
    criteria = events.event_filter(
        {name: value for name, value in shown.items() if value},
        since=_local_time(shown["since"], offset, "From"),
        until=_local_time(shown["until"], offset, "To"),
    )
    return criteria, shown


def _filter_query(shown: dict[str, str]) -> str:
    return urlencode({name: value for name, value in shown.items() if value})


@signed_in
async def events_page(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    criteria, shown = _event_criteria(console)
    raw_cursor = request.query_params.get("cursor", "")
    before = int(raw_cursor) if raw_cursor.isdigit() and len(raw_cursor) < 19 else None

    def read(conn: Connection) -> tuple[AccountOut, list[EventOut], str | None]:
        account = accounts.account_out(accounts.require_account(conn, account_id))
        items, next_cursor = events.history_page(
            conn, account_id, criteria, before=before, limit=EVENTS_PER_PAGE
        )
        return account, items, next_cursor

    account, items, next_cursor = await console.state.db.query(read)
    return account_page(
        console,
        "events.html",
        account,
        tab="events",
        events=items,
        next_cursor=next_cursor,
        filters=shown,
        query=_filter_query(shown),
        actions=ACTIONS,
        categories=CATEGORIES,
        assets=ASSETS,
    )


@signed_in
async def export_events(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    criteria, _shown = _event_criteria(console)

    def read(conn: Connection) -> list[Any]:
        accounts.require_account(conn, account_id)
        return events.history_rows(conn, account_id, criteria)

    rows = await console.state.db.query(read)
    return csv_download(account_id, rows)


ROUTES = [
    TemplateRoute(ACCOUNT + "/events", events_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/events.csv", export_events, methods=["GET"]),
]
