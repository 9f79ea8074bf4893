"""The event history as CSV, the columns of the vendor's Events export.

One writer for the admin API's ``/events/export`` and the console's export button, so
that both give the same file for the same filters.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from starlette.responses import Response

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


def history_csv(rows: list[Any]) -> str:
    """The rows of ``events.service.history_rows`` as a CSV document with its header."""
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


def csv_download(account_id: str, rows: list[Any]) -> Response:
    """The rows as a CSV download named ``events-ACCOUNT_ID.csv``."""
    return Response(
        history_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="events-{account_id}.csv"'},
    )
