"""Headers every answer of a surface carries, error answers included.

A surface states the headers its callers' answers need (``Surface(headers=...)``): the
browser pages a strict Content-Security-Policy that forbids framing, the admin API
``Cache-Control: no-store`` (its answers carry secrets shown once, signed webhook URLs,
people's names and messages). Every answer carries ``X-Content-Type-Options: nosniff``,
so that no browser reads an echoed value (Graph's validation token, a plain-text error)
as anything but its declared type. They are added here, around every handler and error
writer, because an error is written outside the surface that raised it; a header the
response sets itself is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SURFACE_HEADERS_KEY = "gateway.surface_headers"
Headers = Sequence[tuple[bytes, bytes]]

EVERY_ANSWER: Headers = ((b"x-content-type-options", b"nosniff"),)
NO_STORE: Headers = ((b"cache-control", b"no-store"),)
# Pages have no script, style sheet, image or form of their own: nothing is allowed.
BROWSER_PAGES: Headers = (
    (
        b"content-security-policy",
        b"default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    *NO_STORE,
)


class SurfaceHeadersMiddleware:
    """Adds ``EVERY_ANSWER`` and the serving surface's headers to each response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The router has set the surface on this same scope by now.
                wanted = [*EVERY_ANSWER, *scope.get(SURFACE_HEADERS_KEY, ())]
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(name, value) for name, value in wanted if name not in present]
                if extra:
                    message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
