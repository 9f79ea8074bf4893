"""Pure-ASGI middleware recording every HTTP request: request id, metrics, access log.

The route label is the matched route's template (set on the scope by
``gateway.web.routing.TemplateRoute``), or ``unmatched`` — never the raw path, which carries
account and user ids.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.logging import get_logger
from observability.metrics import Metrics, status_class

REQUEST_ID_HEADER = b"x-request-id"
# Any other method a client invents is labelled "other", keeping the label set fixed.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = get_logger("gateway.access")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            return candidate if _SAFE_REQUEST_ID.match(candidate) else None
    return None


class ObservabilityMiddleware:
    """Binds a request id, times the request, counts it and writes one access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The worker process that answers (several share the port); each builds its app.
        self._pid = os.getpid()
        # Label children resolved once per (route, method, status class): a small, fixed set.
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def _record(self, route: str, method: str, status: int, elapsed: float) -> None:
        key = (route, method, status_class(status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.http_requests.labels(*key)
        counter.inc()
        histogram = self._histograms.get(key[:2])
        if histogram is None:
            histogram = self._histograms[key[:2]] = self.metrics.http_duration.labels(*key[:2])
        histogram.observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        # Each request runs in its own task, so this binding cannot leak into another
        # request; it is left in place after the app returns so that the 500 handler,
        # which Starlette runs outside every user middleware, still logs the request id.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        self.metrics.http_in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.http_in_progress.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route_template", "unmatched")
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self._record(route, method, status, elapsed)
            log.info(
                "request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                pid=self._pid,
            )
