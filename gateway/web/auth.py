"""Operator authentication for the admin API: one bearer token from the environment."""

from __future__ import annotations

from starlette.requests import Request

from gateway.security import constant_time_equals
from gateway.web.errors import Unauthorized
from gateway.web.state import AppState, app_state


def require_operator(request: Request) -> AppState:
    """The app state, once the operator token is checked (401 with what to do otherwise)."""
    state = app_state(request)
    expected = state.settings.admin_token
    if expected is None:
        raise Unauthorized(
            "The admin API is disabled: set GATEWAY_ADMIN_TOKEN and restart the gateway."
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Send the operator token as 'Authorization: Bearer <token>'.")
    if not constant_time_equals(token.strip(), expected.get_secret_value()):
        raise Unauthorized("The operator token is not valid.")
    return state
