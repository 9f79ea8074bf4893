"""A loopback HTTP server whose answers are as long, or as slow, as a test wants.

The fakes in ``tests.fakes`` answer as the real services do; the gateway must also
survive a service (or a customer's endpoint) that does not: an answer of hundreds of MiB,
generated as it is sent so that the server itself holds none of it, or one that trickles
in a byte at a time. The server runs on the test's own event loop and counts what it
does: connections, requests, bytes sent, connections the client closed.
"""

from __future__ import annotations

import asyncio
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

KIB = 1024
MIB = 1024 * KIB
CHUNK = 64 * KIB
FILLER = b"x" * CHUNK


@dataclass(frozen=True)
class Answer:
    """What the server answers: ``body``, or ``size`` bytes of filler generated as sent.

    ``framing``: ``length`` (Content-Length), ``chunked``, or ``gzip`` (chunked, the filler
    compressed as it goes). ``drip``: seconds between single bytes, after the headers.
    """

    status: int = 200
    body: bytes | None = None
    size: int = 300 * MIB
    framing: str = "length"
    drip: float | None = None
    content_type: str = "application/json"

    @property
    def length(self) -> int:
        """The body's length before any compression."""
        return len(self.body) if self.body is not None else self.size


class AnswerServer:
    """Serves ``answer`` (which a test may change between calls) to every request."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.url = ""
        self.connections = 0
        self.requests = 0
        self.sent = 0
        self.closed_by_client = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._ended = asyncio.Condition()

    async def __aenter__(self) -> AnswerServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._stopping = True
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        # Each handler ends at its next write, or sleep and write.
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def client_closed(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until the client has closed ``count`` connections (TimeoutError if not)."""
        async with asyncio.timeout(timeout), self._ended:
            await self._ended.wait_for(lambda: self.closed_by_client >= count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head))
                self.requests += 1
                await self._answer(writer, self.answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The client closed the connection: between requests, or in the middle of an
            # answer it stopped reading.
            if not self._stopping:
                async with self._ended:
                    self.closed_by_client += 1
                    self._ended.notify_all()
        finally:
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.transport.abort()

    async def _answer(self, writer: asyncio.StreamWriter, answer: Answer) -> None:
        headers = [f"HTTP/1.1 {answer.status} Answer", f"Content-Type: {answer.content_type}"]
        if answer.framing == "length":
            headers.append(f"Content-Length: {answer.length}")
        else:
            headers.append("Transfer-Encoding: chunked")
        if answer.framing == "gzip":
            headers.append("Content-Encoding: gzip")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("ascii"))
        await writer.drain()
        compressor = zlib.compressobj(wbits=31) if answer.framing == "gzip" else None
        for piece in _pieces(answer):
            data = compressor.compress(piece) if compressor is not None else piece
            await self._write(writer, data, chunked=answer.framing != "length")
            if answer.drip is not None:
                await asyncio.sleep(answer.drip)
        if compressor is not None:
            await self._write(writer, compressor.flush(), chunked=True)
        if answer.framing != "length":
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, *, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            writer.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            writer.write(data)
        await writer.drain()
        self.sent += len(data)


def _pieces(answer: Answer) -> Iterator[bytes]:
    step = 1 if answer.drip is not None else CHUNK
    if answer.body is not None:
        for start in range(0, len(answer.body), step):
            yield answer.body[start : start + step]
        return
    left = answer.size
    while left > 0:
        count = min(step, left)
        yield FILLER if count == CHUNK else FILLER[:count]
        left -= count


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@dataclass
class Peak:
    """The most memory Python allocated at once while measured, above where it started."""

    bytes: int = 0


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """Trace allocations (every thread's) for the block; ``Peak.bytes`` once it ends."""
    peak = Peak()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
