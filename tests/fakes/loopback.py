"""Plumbing every fake shares: a real loopback server for it, and scripted failures.

The gateway calls the services over real HTTP with its own client, so a test (or the local
demo) needs each fake on a real port, not only inside a ``TestClient``. And the gateway's
retry logic is only proven against a service that actually fails; ``Faults`` is the script
of those failures that the fakes consult before serving a request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp


@contextmanager
def serve_app(app: ASGIApp, *, startup_timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a daemon thread; yields its base URL.

    The socket is bound here, on port 0, before the server starts, so there is no window
    in which another process could take the port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake on port {port} did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()


@dataclass(frozen=True)
class Fault:
    """One scripted failure: the HTTP status to answer and an optional Retry-After value."""

    status: int
    retry_after: str | None = None

    def headers(self) -> dict[str, str]:
        """The response headers the failure carries."""
        return {} if self.retry_after is None else {"Retry-After": self.retry_after}


class Faults:
    """A script of failures: the next N requests fail, or every request fails until recovery.

    Thread-safe, because a fake served by ``serve_app`` consumes it on the server's thread
    while the test scripts it from its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remaining = 0
        self._next: Fault | None = None
        self._always: Fault | None = None

    def fail_next(self, count: int, status: int, retry_after: str | None = None) -> None:
        """Answer ``status`` to the next ``count`` requests, then serve normally again."""
        if count < 0:
            raise ValueError("count must not be negative")
        with self._lock:
            self._remaining = count
            self._next = Fault(status, retry_after)

    def fail_always(self, status: int, retry_after: str | None = None) -> None:
        """Answer ``status`` to every request until ``recover()``."""
        with self._lock:
            self._always = Fault(status, retry_after)

    def recover(self) -> None:
        """Forget every scripted failure."""
        with self._lock:
            self._remaining = 0
            self._next = None
            self._always = None

    def take(self) -> Fault | None:
        """The failure this request must answer, if any (consuming one of ``fail_next``)."""
        with self._lock:
            if self._always is not None:
                return self._always
            if self._remaining > 0 and self._next is not None:
                self._remaining -= 1
                return self._next
            return None
