"""Operator authentication for the admin API: one bearer token from the environment."""

from __future__ import annotations

from starlette.requests import Request

from gateway.errors import Unauthorized
from gateway.security import constant_time_equals
from gateway.services import Services


def require_operator(request: Request, services: Services) -> None:
    """Pass, or raise 401 with what to do."""
    expected = services.settings.admin_token
    if expected is None:
        raise Unauthorized(
            "The admin API is disabled: set GATEWAY_ADMIN_TOKEN and restart the gateway."
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Send the operator token as 'Authorization: Bearer <token>'.")
    if not constant_time_equals(token.strip(), expected.get_secret_value()):
        raise Unauthorized("The operator token is not valid.")
