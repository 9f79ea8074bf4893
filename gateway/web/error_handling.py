"""Every exception a request raises becomes one response, in its surface's error format.

``GatewayError`` carries its status and detail; Starlette's routing errors (404, 405)
and the database's "retry later" (503 with ``Retry-After``) are mapped here; anything
else is a bug, logged with the request id and answered 500. The catch-all answers
without re-raising, so the client's keep-alive connection stays usable.
"""

from __future__ import annotations

import traceback

from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.web.errors import GatewayError, RateLimited
from gateway.web.responses import ErrorReport, error_format_of
from observability.logging import get_logger
from storage.errors import DatabaseUnavailable

log = get_logger("gateway.errors")

_HTTP_DETAILS = {
    404: "No such endpoint. SCIM endpoints live under the tenant URL (…/scim/v2/ACCOUNT_ID); "
    "the admin API under /api/v1.",
    405: "This endpoint does not accept that HTTP method; the Allow header lists those it does.",
}


def report_of(scope: Scope, exc: Exception) -> ErrorReport:
    """The error report answering ``exc``."""
    route = scope.get("route_template")
    if isinstance(exc, GatewayError):
        if isinstance(exc, RateLimited):
            log.warning("rate_limited", route=route)
        return ErrorReport(exc.status, exc.detail, exc.code, exc.scim_type, exc.headers, exc.fields)
    if isinstance(exc, HTTPException):
        detail = _HTTP_DETAILS.get(exc.status_code, str(exc.detail))
        return ErrorReport(
            exc.status_code, detail, f"http_{exc.status_code}", None, dict(exc.headers or {})
        )
    if isinstance(exc, DatabaseUnavailable):
        log.warning("database_unavailable", route=route, error=type(exc).__name__)
        return ErrorReport(
            503,
            exc.detail,
            "unavailable",
            None,
            {"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, ClientDisconnect):
        # The caller left mid-body (a client timeout, a load tool stopping): not a bug,
        # and nobody reads the answer.
        log.info("client_disconnected", route=route)
        return ErrorReport(400, "The client closed the connection mid-request.", "disconnected")
    _log_bug(exc, route)
    return ErrorReport(
        500, "Internal error; the gateway logged it with this request's id.", "internal_error"
    )


def _log_bug(exc: Exception, route: str | None) -> None:
    if isinstance(exc, DBAPIError):
        # The database's own message can quote row values (PostgreSQL's "Key (...)=(...)"):
        # log where it happened and what kind of error, not the message.
        log.error(
            "unhandled_error",
            route=route,
            error=type(exc.orig).__name__,
            sqlstate=getattr(exc.orig, "sqlstate", None),
            traceback="".join(traceback.format_tb(exc.__traceback__)),
        )
    else:
        log.error("unhandled_error", exc_info=exc, route=route)


def render_exception(scope: Scope, exc: Exception) -> Response:
    """The response answering ``exc`` in the format of the surface serving ``scope``."""
    return error_format_of(scope).render(report_of(scope, exc))


async def exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for the errors it routes by class."""
    return render_exception(request.scope, exc)


# The errors Starlette routes to ``exception_handler`` by class; everything else reaches
# ``ErrorHandlingMiddleware``.
HANDLED: tuple[type[Exception], ...] = (GatewayError, HTTPException, DatabaseUnavailable)


class ErrorHandlingMiddleware:
    """Answers any exception that escaped the handlers; never re-raises one it answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:  # too late to answer: the server closes the connection
                raise
            await render_exception(scope, exc)(scope, receive, send)
