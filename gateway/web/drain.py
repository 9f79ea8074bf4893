"""A server process's graceful stop on SIGTERM: drain, then shut down.

Kubernetes sends SIGTERM when it starts terminating a pod, and goes on routing requests
to it for a few seconds more, until every node has heard that the pod left the Service.
A server that stopped accepting at once would refuse those requests. So on SIGTERM the
process first drains for ``GATEWAY_DRAIN_SECONDS``: ``/readyz`` answers 503 (the pod
leaves the endpoints of any balancer still probing), requests are served as before, and
the outbox worker claims nothing more. Then the server's own shutdown runs: it stops
accepting, gives requests in flight ``GATEWAY_SHUTDOWN_SECONDS`` to finish, and the
lifespan lets claimed jobs finish within what is left of that time, giving back the rest.

SIGINT (Ctrl-C at a terminal) stops at once, as before; a second SIGTERM ends the drain.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("gateway.drain")

SignalHandler = Callable[[int, FrameType | None], Any]


@dataclass
class Drain:
    """The drain of one server process (installed by the lifespan of ``serve``)."""

    seconds: float
    shutdown_seconds: float
    started: float | None = None
    _callbacks: list[Callable[[], None]] = field(default_factory=list)

    @property
    def draining(self) -> bool:
        return self.started is not None

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the event loop when the drain begins."""
        self._callbacks.append(callback)

    def remaining(self, default: float) -> float:
        """Seconds left of drain + shutdown since SIGTERM (``default`` without one)."""
        if self.started is None:
            return default
        deadline = self.started + self.seconds + self.shutdown_seconds
        return max(0.5, deadline - time.monotonic())

    def install(self) -> None:
        """Put the drain in front of the server's own SIGTERM handler (which is in place
        when the lifespan starts). Only a process's main thread can: elsewhere (an app in a
        test's thread) there is no signal to drain on, and nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            return
        server_exit = signal.getsignal(signal.SIGTERM)
        if not callable(server_exit):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.started is not None:
                server_exit(sig, frame)
                return
            self.started = time.monotonic()
            loop.call_soon_threadsafe(self._begin, server_exit, sig)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _begin(self, server_exit: SignalHandler, sig: int) -> None:
        log.info("draining", seconds=self.seconds, shutdown_seconds=self.shutdown_seconds)
        for callback in self._callbacks:
            callback()
        asyncio.get_running_loop().call_later(self.seconds, server_exit, sig, None)
