"""Serving HTTP: uvicorn with the gateway's options, and the port that its workers share.

With several worker processes, each listens on a socket of its own, bound to the one
port with ``SO_REUSEPORT``, and the kernel hands each new connection to one of them by a
hash of its addresses. With one socket shared by every worker (what uvicorn does), the
worker whose event loop wakes first accepts every pending connection; a client that keeps
its connections open (Entra, Twilio, Graph, every load balancer) opens them at once, and
often all of them ended on one worker while the other sat idle (decision 0022).
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway.settings import Settings

APP = "gateway.app:app_from_environment"
# Connections the kernel queues for a worker before it accepts them (uvicorn's default).
BACKLOG = 2048


def run(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGTERM / SIGINT, with ``settings.workers`` processes."""
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": settings.workers,
        "backlog": BACKLOG,
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "server_header": False,
        "timeout_keep_alive": settings.keepalive_seconds,
        "timeout_graceful_shutdown": settings.shutdown_seconds,
    }
    if settings.workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(APP, **options)
        return
    shared = SharedPort(host, port)
    try:
        Multiprocess(uvicorn.Config(APP, **options), sockets=shared).run()
    finally:
        shared.close()


class SharedPort(list[socket.socket]):
    """The port of every worker: reserved here, one listening socket per worker there.

    The supervisor binds the port (so that one in use fails at once, and port 0 gets a
    number) without listening on it: only listening sockets take connections, so it takes
    none. Each worker receives this object pickled, and unpickles it as a list of one new
    socket of its own on the same address, listening; a worker restarted after a crash
    does the same. ``SO_REUSEPORT`` lets only sockets of the same user share the port.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._reserved = _bound(family, address)
        self.family = family
        self.address: Any = self._reserved.getsockname()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_listening, (self.family, self.address))

    def close(self) -> None:
        self._reserved.close()


def _bound(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _listening(family: int, address: Any) -> list[socket.socket]:
    """In a worker: its own socket on the shared port (asyncio listens on it)."""
    return [_bound(family, address)]
