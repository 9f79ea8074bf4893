"""The application factory: ``create_app(settings)`` builds one independent gateway.

The lifespan owns the engine; handlers reach it (and the other long-lived objects)
through lifespan state, so tests can build as many apps as they like, on SQLite or
PostgreSQL, in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from gateway.api.routes import routes as api_routes
from gateway.errors import GatewayError
from gateway.hygiene import RejectNulMiddleware
from gateway.ratelimit import RateLimiter
from gateway.responses import (
    gateway_error_handler,
    http_exception_handler,
    unhandled_error_handler,
)
from gateway.scim.credentials import CredentialCache
from gateway.scim.discovery import Discovery
from gateway.scim.routes import routes as scim_routes
from gateway.security import SecretBox
from gateway.services import Services
from gateway.settings import Settings
from observability.health import routes as health_routes
from observability.metrics import Metrics
from observability.middleware import ObservabilityMiddleware
from storage.engine import Database, make_engine
from storage.migrate import upgrade


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> Starlette:
    """Build the gateway app; its lifespan migrates the database to the newest schema."""
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        engine = make_engine(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        upgrade(engine)
        db = Database(engine, threads=settings.database_pool_size)
        found = Services(
            settings=settings,
            db=db,
            metrics=metrics,
            discovery=Discovery(settings.scim_max_page_size),
            rate_limiter=RateLimiter(
                settings.scim_rate_limit_per_second, settings.scim_rate_limit_burst
            ),
            secrets=SecretBox(settings.secret_keys),
            credentials=CredentialCache(),
        )
        try:
            yield {"services": found}
        finally:
            db.dispose()

    return Starlette(
        routes=[*scim_routes, *health_routes, *api_routes],
        middleware=[
            Middleware(ObservabilityMiddleware, metrics=metrics),
            Middleware(RejectNulMiddleware),
        ],
        exception_handlers={
            GatewayError: gateway_error_handler,
            HTTPException: http_exception_handler,
            Exception: unhandled_error_handler,
        },
        lifespan=lifespan,
    )
