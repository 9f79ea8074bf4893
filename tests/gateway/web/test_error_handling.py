"""Every exception becomes one response in the format of the surface that was called."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.testclient import TestClient

from gateway.web.error_handling import ErrorHandlingMiddleware, exception_handler
from gateway.web.errors import GatewayError, InvalidValue
from gateway.web.responses import ErrorReport, json_response
from gateway.web.routing import Surface, TemplateRoute
from storage.errors import DatabaseBusy, DatabaseUnavailable


class PlainText:
    """A surface that answers errors in plain text, as a webhook provider may need."""

    def render(self, error: ErrorReport) -> Response:
        return Response(f"{error.status} {error.detail}", error.status, headers=error.headers)


async def bug(_request: Request) -> Response:
    raise RuntimeError("a bug")


async def refused(_request: Request) -> Response:
    raise InvalidValue("bad value")


async def gone(_request: Request) -> Response:
    raise ClientDisconnect


async def busy(_request: Request) -> Response:
    raise DatabaseBusy("locked", retry_after=3)


def app() -> Starlette:
    routes = [
        TemplateRoute("/text/bug", bug, methods=["GET"]),
        TemplateRoute("/text/refused", refused, methods=["GET"]),
        TemplateRoute("/text/busy", busy, methods=["GET"]),
        TemplateRoute("/text/gone", gone, methods=["GET"]),
    ]
    return Starlette(
        routes=[Surface("/text", routes, PlainText())],
        middleware=[Middleware(ErrorHandlingMiddleware)],
        exception_handlers={
            GatewayError: exception_handler,
            HTTPException: exception_handler,
            DatabaseUnavailable: exception_handler,
        },
    )


def test_a_surface_writes_its_errors_in_its_own_format() -> None:
    """400, 404, 405 and 503 of a plain-text surface are plain text, whatever the path."""
    client = TestClient(app())
    assert client.get("/text/refused").text == "400 bad value"
    assert client.get("/text/missing").text.startswith("404 ")
    not_allowed = client.post("/text/refused")
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "GET, HEAD"
    unavailable = client.get("/text/busy")
    assert (unavailable.status_code, unavailable.headers["retry-after"]) == (503, "3")
    outside = client.get("/elsewhere")
    assert outside.json()["error"] == "http_404"


def test_a_bug_is_answered_500_without_reraising() -> None:
    """The catch-all answers a 500 itself, so the server keeps the connection open."""
    client = TestClient(app(), raise_server_exceptions=True)
    response = client.get("/text/bug")
    assert response.status_code == 500
    assert "request's id" in response.text


def test_json_response_serialises_with_orjson() -> None:
    """Datetimes and nested values come out as JSON."""
    assert json_response({"a": [1, {"b": None}]}).body == b'{"a":[1,{"b":null}]}'


def test_a_client_leaving_mid_request_is_not_a_server_error() -> None:
    """ClientDisconnect is answered 400 (nobody reads it), never logged as a bug."""
    response = TestClient(app(), raise_server_exceptions=True).get("/text/gone")
    assert response.status_code == 400
