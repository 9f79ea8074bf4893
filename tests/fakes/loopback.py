"""Plumbing every fake shares: a real loopback server for it, and scripted failures.

The gateway calls the services over real HTTP with its own client, so a test (or the local
demo) needs each fake on a real port, not only inside a ``TestClient``. And the gateway's
retry logic is only proven against a service that actually fails; ``Faults`` is the script
of those failures that the fakes consult before serving a request.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp


class PromptServer(uvicorn.Server):
    """uvicorn's server, noticing ``should_exit`` within 10 ms instead of 100 ms.

    The tests start and stop several hundred servers (the gateway, the fakes); uvicorn's
    100 ms tick made each stop wait for it.
    """

    async def main_loop(self) -> None:
        """uvicorn's loop of ticks, ten times as often."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 8_640_000
            await asyncio.sleep(0.01)


class _Loopback:
    """One app served on 127.0.0.1 in a daemon thread, on a socket bound before it starts.

    Bound here, on port 0, so there is no window in which another process could take the
    port.
    """

    def __init__(self, app: ASGIApp, startup_timeout: float) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._timeout = startup_timeout
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = PromptServer(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"fake-{port}",
            daemon=True,
        )
        self._thread.start()

    def wait_started(self) -> None:
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake at {self.url} did not start")
            time.sleep(0.01)

    def stop_soon(self) -> None:
        self._server.should_exit = True

    def join(self) -> None:
        self._thread.join(timeout=self._timeout)
        self._sock.close()


@contextmanager
def serve_apps(*apps: ASGIApp, startup_timeout: float = 20.0) -> Iterator[list[str]]:
    """Serve each app as ``serve_app`` does; yields their base URLs, in order.

    At the end every server is told to stop before any is waited for: their shutdowns
    (uvicorn's takes at least 100 ms) overlap.
    """
    servers: list[_Loopback] = []
    try:
        for app in apps:
            servers.append(_Loopback(app, startup_timeout))
        for server in servers:
            server.wait_started()
        yield [server.url for server in servers]
    finally:
        for server in servers:
            server.stop_soon()
        for server in servers:
            server.join()


@contextmanager
def serve_app(app: ASGIApp, *, startup_timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a daemon thread; yields its base URL."""
    with serve_apps(app, startup_timeout=startup_timeout) as [url]:
        yield url


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
