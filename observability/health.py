"""Liveness, readiness and the Prometheus scrape endpoint.

``/livez`` answers from the process alone: a slow or down database must not make an
orchestrator restart a healthy process. ``/readyz`` checks the database answers and
its schema is the one this code expects.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.routing import TemplateRoute
from gateway.services import services
from storage.engine import Database
from storage.migrate import schema_is_current


async def livez(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _database_state(db: Database) -> str:
    try:
        with db.read() as conn:
            conn.execute(text("SELECT 1"))
            return "ok" if schema_is_current(conn) else "schema_outdated"
    except SQLAlchemyError:
        return "unreachable"


async def readyz(request: Request) -> Response:
    db = services(request).db
    state = await db.run(_database_state, db)
    status = 200 if state == "ok" else 503
    return JSONResponse(
        {"status": "ok" if status == 200 else "unavailable", "database": state}, status_code=status
    )


async def metrics(request: Request) -> Response:
    body, content_type = services(request).metrics.exposition()
    return Response(body, media_type=content_type)


routes = [
    TemplateRoute("/livez", livez, methods=["GET"]),
    TemplateRoute("/readyz", readyz, methods=["GET"]),
    TemplateRoute("/metrics", metrics, methods=["GET"]),
]
