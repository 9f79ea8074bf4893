"""Routes that record their path template, and surfaces that own an error format.

A ``Surface`` is a part of the URL space served to one kind of caller (Entra's SCIM
client, operators, a webhook provider): it routes its own paths, answers 404 and 405
itself (with an ``Allow`` header listing every method of the path), refuses NUL
characters in the path and query, and marks the scope with its error format so that
every error of its requests is written the way its callers expect, and with the headers
every answer of its callers needs (``gateway.web.headers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from gateway.nul import NUL_DETAIL
from gateway.web.errors import InvalidValue
from gateway.web.headers import SURFACE_HEADERS_KEY, Headers
from gateway.web.responses import ERROR_FORMAT_KEY, ErrorFormat

ROUTE_TEMPLATE_KEY = "route_template"


class TemplateRoute(Route):
    """Like ``Route``; a match also sets ``scope["route_template"]`` to the route's path."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope[ROUTE_TEMPLATE_KEY] = self.path
        return match, child_scope


class Surface(BaseRoute):
    """The routes under ``prefix``, answering errors in ``error_format``."""

    def __init__(
        self,
        prefix: str,
        routes: Sequence[Route],
        error_format: ErrorFormat,
        *,
        headers: Headers = (),
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.routes = list(routes)
        self.error_format = error_format
        self.headers = tuple(headers)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path: str = scope["path"]
        if path == self.prefix or path.startswith(self.prefix + "/"):
            return Match.FULL, {
                ERROR_FORMAT_KEY: self.error_format,
                SURFACE_HEADERS_KEY: self.headers,
            }
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope["query_string"]):
            raise InvalidValue(NUL_DETAIL)
        allowed: set[str] = set()
        partial: Scope | None = None
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL:
                allowed.update(route.methods or ())
                partial = partial or child_scope
        if partial is not None:
            scope[ROUTE_TEMPLATE_KEY] = partial[ROUTE_TEMPLATE_KEY]
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        raise HTTPException(404)

    def url_path_for(self, name: str, /, **path_params: str) -> URLPath:
        """Surfaces are not reversed by name."""
        raise NoMatchFound(name, path_params)
