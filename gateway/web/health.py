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
from storage.migrate import schema_state


async def livez(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _database_state(conn: Connection) -> str:
    """``ok`` on this code's schema and on a newer one that admits this code (a rolling
    upgrade has migrated while this replica still serves); the verdict otherwise."""
    conn.execute(text("SELECT 1"))
    state = schema_state(conn)
    return "ok" if state.usable else f"schema_{state.verdict}"


async def readyz(request: Request) -> Response:
    """503 while the process drains before it stops (SIGTERM), or when its database cannot
    serve it; 200 otherwise."""
    if app_state(request).drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
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
