"""Refuse NUL characters before they reach the database.

PostgreSQL text cannot hold NUL, and a query carrying one fails with a server error;
SQLite would store it silently. A NUL in the path or the query string is refused here,
for every endpoint at once; JSON bodies are checked where they are decoded
(``reject_nul``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import InvalidValue
from gateway.responses import error_body, json_response, media_type_for

NUL_DETAIL = "Text may not contain NUL characters (\\u0000 or %00)."


def reject_nul(value: Any) -> None:
    """Raise ``InvalidValue`` if any string (key or value) of decoded JSON holds a NUL."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidValue(NUL_DETAIL)
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_nul(key)
            reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            reject_nul(item)


class RejectNulMiddleware:
    """Answers 400 (in the endpoint's error format) to a path or query with a NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope["query_string"])
        ):
            request = Request(scope)
            body = error_body(request, 400, NUL_DETAIL, "invalidValue", "invalid_value")
            response = json_response(body, 400, media_type=media_type_for(request))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
