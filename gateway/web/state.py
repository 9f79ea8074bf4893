"""What the lifespan hands to every handler: settings, database, metrics, shared helpers.

Features keep their own long-lived objects (SCIM's discovery documents, later the
provider clients) in lifespan state of their own; this holds only what every surface
needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.clients.providers import Providers
from gateway.security import SecretBox
from gateway.settings import Settings
from gateway.web.drain import Drain
from gateway.web.ratelimit import AccountLimit, RateLimiter
from observability.metrics import Metrics
from storage.engine import Database


@dataclass(frozen=True)
class AppState:
    """Long-lived objects of one app; built by the lifespan, reached via ``app_state()``."""

    settings: Settings
    db: Database
    metrics: Metrics
    rate_limiter: AccountLimit
    auth_failures: RateLimiter
    secrets: SecretBox
    providers: Providers
    drain: Drain


def app_state(request: Request) -> AppState:
    """The state of the app serving ``request``."""
    state: AppState = request.state.app
    return state
