"""A load balancer in front of several gateway replicas: one public address, each new
connection sent to the next replica that accepts it (round robin), as a Kubernetes
Service spreads connections over its pods.

Graph's notifications, browsers' sign-ins and Twilio's webhooks go to one public URL;
with the balancer, that URL reaches whichever replicas are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.live import free_port


class Balancer:
    """Round-robin TCP forwarding from ``url`` to ``backends`` (``host:port`` strings,
    changed at will: a restarted replica is put back by assigning the list)."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
        # Connections still open are cut, as a balancer going away cuts them.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(2 * len(self.backends)):
            host, port = self.backends[next(self._turn) % len(self.backends)].rsplit(":", 1)
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(host, int(port))
        raise OSError("no replica accepts connections")

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self._connect()
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            for side in (writer, upstream_writer):
                side.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await side.wait_closed()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


@contextmanager
def balancing(backends: list[str]) -> Iterator[Balancer]:
    """A running balancer over ``backends``, closed at the end."""
    balancer = Balancer(backends)
    balancer.start()
    try:
        yield balancer
    finally:
        balancer.close()
