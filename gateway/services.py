"""What the lifespan hands to every handler: settings, database, metrics, helpers."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.ratelimit import RateLimiter
from gateway.scim.credentials import CredentialCache
from gateway.scim.discovery import Discovery
from gateway.security import SecretBox
from gateway.settings import Settings
from observability.metrics import Metrics
from storage.engine import Database


@dataclass(frozen=True)
class Services:
    """Long-lived objects of one app; built by the lifespan, reached via ``services()``."""

    settings: Settings
    db: Database
    metrics: Metrics
    discovery: Discovery
    rate_limiter: RateLimiter
    secrets: SecretBox
    credentials: CredentialCache


def services(request: Request) -> Services:
    """The services of the app serving ``request``."""
    found: Services = request.state.services
    return found
