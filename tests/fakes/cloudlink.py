"""A fake CloudLink event receiver, checking the gateway's Standard Webhooks deliveries.

The gateway delivers events to CloudLink signed per Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``) and retries what fails. A receiver that accepted
anything would prove neither: this one verifies every signature with the ``standardwebhooks``
reference library (wrong secret, altered body or a timestamp more than five minutes off is a
401), deduplicates on ``webhook-id`` as a real consumer must, and can be scripted to fail
(429 with Retry-After, 5xx, or a permanent 410) so that retries, backoff and giving up are
tested against a real HTTP answer. It can also answer as a careless receiver might: 200
followed by a body of hundreds of MiB (``answer_at_length``), generated as it is sent, which
the gateway must neither hold nor wait for. Tests wait on its state with ``wait_for``
instead of sleeping.

Each path under ``/events`` is one endpoint with its own secret (``set_secret``); a path
without a secret answers 404, as an unknown endpoint would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.lowlevel
import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import Faults

STREAM_CHUNK = 64 * 1024


class FakeCloudLink:
    """CloudLink's event endpoints, in memory.

    State for tests: ``received`` (first deliveries: ``id``, ``timestamp``, ``type``,
    ``data``, ``body``, ``path``), ``duplicates`` (webhook ids delivered again to the same path),
    ``rejected`` (deliveries refused for their signature: ``path``, ``id``, ``reason``),
    ``attempts`` (every request, faults included) and ``streamed`` (bytes of the long
    answers of ``answer_at_length`` handed to the server).
    """

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.received: list[dict[str, Any]] = []
        self.duplicates: list[str] = []
        self.rejected: list[dict[str, Any]] = []
        self.attempts = 0
        self.streamed = 0
        self._answer_length: int | None = None
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._faults = Faults()
        self.app = Starlette(
            routes=[
                Route("/events", self._deliver, methods=["POST"]),
                Route("/events/{rest:path}", self._deliver, methods=["POST"]),
            ]
        )

    def set_secret(self, path: str, secret: str) -> None:
        """The ``whsec_...`` secret the endpoint at ``path`` (e.g. "/events") verifies with."""
        Webhook(secret)  # refuse a malformed secret now, not at the first delivery
        self.secrets["/" + path.strip("/")] = secret

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None) -> None:
        """Answer ``status`` to the next ``count`` deliveries, with Retry-After when given."""
        self._faults.fail_next(count, status, retry_after)

    def fail_always(self, status: int, retry_after: str | None = None) -> None:
        """Answer ``status`` (e.g. 410 Gone or 500) to every delivery until ``recover()``."""
        self._faults.fail_always(status, retry_after)

    def recover(self) -> None:
        """Accept deliveries again."""
        self._faults.recover()

    def answer_at_length(self, size: int | None) -> None:
        """Answer each first delivery of an event 200 with ``size`` bytes of body (None: 204,
        empty, as by default)."""
        self._answer_length = size

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """The events received once each, optionally only those of one ``type``."""
        return [event for event in self.received if type is None or event["type"] == type]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll until ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the condition did not hold within {timeout} s")
            await asyncio.sleep(0.02)

    async def _deliver(self, request: Request) -> Response:
        with self._lock:
            self.attempts += 1
        fault = self._faults.take()
        if fault is not None:
            return JSONResponse(
                {"error": "scripted failure"}, status_code=fault.status, headers=fault.headers()
            )
        path = request.url.path.rstrip("/") or "/"
        secret = self.secrets.get(path)
        if secret is None:
            return JSONResponse({"error": f"no endpoint at {path}"}, status_code=404)
        body = await request.body()
        headers = dict(request.headers)
        webhook_id = headers.get("webhook-id")
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as error:
            with self._lock:
                self.rejected.append({"path": path, "id": webhook_id, "reason": str(error)})
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        assert webhook_id is not None  # verify() refuses a delivery without one
        with self._lock:
            if (path, webhook_id) in self._seen:
                self.duplicates.append(webhook_id)
                return Response(status_code=204)
            self._seen.add((path, webhook_id))
            length = self._answer_length
            self.received.append(
                {
                    "id": webhook_id,
                    "timestamp": int(float(headers["webhook-timestamp"])),
                    "type": payload.get("type"),
                    "data": payload.get("data"),
                    "body": payload,
                    "path": path,
                }
            )
        if length is not None:
            return StreamingResponse(self._filler(length), media_type="text/plain")
        return Response(status_code=204)

    async def _filler(self, size: int) -> AsyncIterator[bytes]:
        chunk = b"x" * STREAM_CHUNK
        left = size
        while left > 0:
            piece = chunk if left >= len(chunk) else chunk[:left]
            with self._lock:
                self.streamed += len(piece)
            left -= len(piece)
            yield piece
            # A turn for the response to notice a client that hung up, which stops the
            # stream (the server drops what is sent after that without waiting).
            await anyio.lowlevel.checkpoint()
