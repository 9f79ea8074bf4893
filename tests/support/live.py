"""A real gateway server on a loopback port, for clients that speak HTTP (scim2-tester, load)."""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings
from tests.fakes.loopback import PromptServer

# Ports a server of a test listens on are drawn from below the kernel's ephemeral range
# (32768-60999 on Linux): a port the kernel handed out (port 0) is free when asked, but
# any outgoing connection of a parallel test can take it as its own local port before the
# server binds it, and the server then fails to start.
LISTEN_PORTS = range(20000, 32768)


def _own_ports() -> Iterator[int]:
    """This test process's share of ``LISTEN_PORTS``, in turn from a random place.

    Each pytest-xdist worker draws from a slice of its own, so two parallel tests never
    pick the same port between the check below and their server's bind (they did, drawn
    at random from the whole range: one server then failed to start, or, binding with
    ``SO_REUSEPORT``, shared the port with the other). In turn, a port comes back to this
    process only after the whole slice.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = len(LISTEN_PORTS) // count
    first = LISTEN_PORTS.start + (index % count) * size
    offset = random.randrange(size)
    for step in itertools.count():
        yield first + (offset + step) % size


_PORTS = _own_ports()
_PORTS_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port nobody listens on right now, of this test process's own ports."""
    for _ in range(100):
        with _PORTS_LOCK:
            port = next(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port to listen on")


@contextmanager
def live_server(settings: Settings, port: int) -> Iterator[str]:
    """Serve ``create_app(settings)`` with uvicorn in a thread; yields the base URL."""
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = PromptServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
