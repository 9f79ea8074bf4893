"""Liveness, readiness and the Prometheus scrape endpoint.

``/livez`` and ``/metrics`` answer from the process alone: a slow or locked database
must not make an orchestrator restart a healthy process, nor blind its monitoring.
``/readyz`` checks, off the event loop, that the database answers and its schema is
the one this code expects.
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.web.routing import TemplateRoute
from gateway.web.state import app_state
from storage.errors import DatabaseUnavailable
from storage.migrate import schema_is_current


async def livez(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _database_state(conn: Connection) -> str:
    conn.execute(text("SELECT 1"))
    return "ok" if schema_is_current(conn) else "schema_outdated"


async def readyz(request: Request) -> Response:
    try:
        state = await app_state(request).db.query(_database_state)
    except (SQLAlchemyError, DatabaseUnavailable):
        state = "unreachable"
    status = 200 if state == "ok" else 503
    return JSONResponse(
        {"status": "ok" if status == 200 else "unavailable", "database": state}, status_code=status
    )


async def metrics(request: Request) -> Response:
    body, content_type = app_state(request).metrics.exposition()
    return Response(body, media_type=content_type)


routes = [
    TemplateRoute("/livez", livez, methods=["GET"]),
    TemplateRoute("/readyz", readyz, methods=["GET"]),
    TemplateRoute("/metrics", metrics, methods=["GET"]),
]
