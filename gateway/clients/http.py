"""What every outbound call shares: one error type, the retry rule, backoff with jitter,
and a ceiling on what an answer may hold.

Retries happen only where the other side may succeed later: a connection error, a
timeout, 429 or a 5xx. Anything else (a 4xx) is the caller's mistake and repeating it
changes nothing. ``Retry-After`` is honoured, in seconds (fractions too) or as an HTTP
date. Calls made while an admin waits (checking credentials, setting a webhook URL)
retry a few times within seconds; deliveries retry through the outbox instead, so that
a retry survives a restart.

An answer's body is read in chunks up to a ceiling each call sets from what the API it
calls can legitimately answer: up to 64 deliveries run at once per process, and one
answer streaming hundreds of MiB must cost no more than its ceiling. Reading stops as
soon as the ceiling is passed; the connection is then closed rather than reused, as
aiohttp does with a body not read to its end. The client's total timeout runs until the
body is read (aiohttp cancels it only when the connection is released), so an answer
that trickles in a byte at a time is cut at the same deadline as one that never starts.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import aiohttp.abc
import orjson

from gateway.nul import mend_decoded

T = TypeVar("T")

USER_AGENT = "cloudlink-gateway"
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
TIMED_OUT_STATUSES = frozenset({408, 504})

KIB = 1024
MIB = 1024 * KIB
# A call that names no ceiling reads one resource as JSON (a provider's account, message
# or error, the notification URL's echo), which is a few KB.
ANSWER_LIMIT = 64 * KIB
# Of an answer to a retry (429, 5xx) only the status and headers count; this much of its
# body is read so that a short one leaves its connection open for the next call.
FAILURE_LIMIT = 16 * KIB


@dataclass
class ProviderError(Exception):
    """An outbound call that failed; ``retryable`` says whether trying again may help."""

    message: str
    retryable: bool
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


class Unanswered(ProviderError):
    """The call was sent but no answer came (timeout, connection lost, 408 or 504), or one
    too large to read: the other side may have acted on it. Repeating a call that creates
    something needs care."""


HttpClient = aiohttp.ClientSession


def new_http_client(
    timeout: float, connections: int = 64, resolver: aiohttp.abc.AbstractResolver | None = None
) -> HttpClient:
    """The client of one process: pooled connections, a timeout on every call.

    aiohttp rather than httpx2 (decision 0012): measured on this project's fake provider,
    about 130 µs of CPU per request against 820 µs, which was most of a delivery's cost.
    Create it inside a running event loop (the lifespan, a CLI command's coroutine).
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5.0)),
        connector=aiohttp.TCPConnector(limit=connections, resolver=resolver),
        headers={"User-Agent": USER_AGENT},
    )


@dataclass(frozen=True)
class Reply:
    """A response: status, headers and body (all of it, unless ``truncated``)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False

    def json(self) -> Any:
        """The body as JSON (``ValueError`` if it is not), each NUL replaced by U+FFFD:
        what a provider answers may be stored, and the database takes no NUL (0015)."""
        return mend_decoded(orjson.loads(self.body))


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": a random wait in [c/2, c], where c is
    min(cap, base * 2^(n-1)).

    The jitter spreads the retries of many rows that failed together (a provider outage)
    instead of sending them back in waves; keeping at least half of c keeps every retry
    backing off (full jitter, [0, c], may retry at once).
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311  (timing, not secrecy)


def _size(count: int) -> str:
    if count % MIB == 0:
        return f"{count // MIB} MiB"
    if count % KIB == 0:
        return f"{count // KIB} KiB"
    return f"{count} bytes"


def _too_large(what: str, method: str, status: int, limit: int) -> ProviderError:
    """An answer over the call's ceiling. Not retryable: the same call gets the same
    answer. Below 400 the call was accepted, and what it did is unknown (``Unanswered``:
    a send is not repeated, a create is looked for); from 400 on it was refused, only
    the reasons are lost."""
    message = f"{what}: HTTP {status} with an answer over {_size(limit)}, the most this call reads"
    if status >= 400:
        return ProviderError(message, retryable=False, status=status)
    if method not in ("GET", "HEAD"):
        message += "; whether it was done is unknown"
    return Unanswered(message, retryable=False, status=status)


async def _read(content: aiohttp.StreamReader, limit: int, *, partial: bool) -> tuple[bytes, bool]:
    """The body as it arrives, at most ``limit`` bytes; True when it stopped short of the
    end (more was coming), and then nothing is kept unless ``partial``.

    ``partial``: a body whose status already decided the outcome; its first ``limit``
    bytes are kept, and one cut short by the deadline or a lost connection keeps what came.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = await content.read(limit + 1 - size)
            if not chunk:
                return b"".join(chunks), False
            size += len(chunk)
            chunks.append(chunk)
    except (TimeoutError, aiohttp.ClientError):
        if not partial:
            raise
        return b"".join(chunks), True
    if not partial:
        return b"", True
    chunks[-1] = chunks[-1][: len(chunks[-1]) - (size - limit)]
    return b"".join(chunks), True


async def request(
    http: HttpClient,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    form: Mapping[str, str | list[str]] | None = None,
    json: Any = None,
    content: str | bytes | None = None,
    timeout: float | None = None,
    limit: int = ANSWER_LIMIT,
    truncate: bool = False,
) -> Reply:
    """One call; transport failures and retryable statuses become ``ProviderError``.

    Other statuses are returned for the caller to interpret (each provider words its
    errors differently). Redirects are not followed. ``timeout``: this call's total,
    instead of the client's (a provider known to answer slowly). ``limit``: the most of
    the body read; a longer one is an error (see ``_too_large``), never held. With
    ``truncate`` the status alone decides: the first ``limit`` bytes are kept, and a body
    still arriving at the deadline is cut there (``Reply.truncated``).
    """
    body: Any = content
    if form is not None:
        body = [
            (name, item)
            for name, value in form.items()
            for item in (value if isinstance(value, list) else [value])
        ]
    try:
        async with http.request(
            method,
            url,
            headers=headers,
            params=params,
            data=body,
            json=json,
            allow_redirects=False,
            timeout=http.timeout
            if timeout is None
            else aiohttp.ClientTimeout(total=timeout, sock_connect=http.timeout.sock_connect),
        ) as response:
            retrying = response.status in RETRYABLE_STATUSES
            partial = truncate or retrying
            keep = min(limit, FAILURE_LIMIT) if retrying else limit
            if not partial and (response.content_length or 0) > keep:
                raise _too_large(what, method, response.status, keep)
            answer, more = await _read(response.content, keep, partial=partial)
            if more and not partial:
                raise _too_large(what, method, response.status, keep)
            reply = Reply(
                status=response.status,
                reason=response.reason or "",
                headers={k.lower(): v for k, v in response.headers.items()},
                body=answer,
                truncated=more,
            )
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        # Not connected (or no connection in time): nothing was sent.
        raise ProviderError(f"{what}: {type(exc).__name__}", retryable=True) from exc
    except TimeoutError as exc:
        raise Unanswered(f"{what}: timed out", retryable=True) from exc
    except aiohttp.ClientError as exc:
        raise Unanswered(f"{what}: {type(exc).__name__}", retryable=True) from exc
    if reply.status in RETRYABLE_STATUSES:
        # A timeout answered by the server or a proxy in front of it says no more than no
        # answer: the call may have been acted on.
        failed = Unanswered if reply.status in TIMED_OUT_STATUSES else ProviderError
        raise failed(
            f"{what}: HTTP {reply.status}",
            retryable=True,
            status=reply.status,
            retry_after=parse_retry_after(reply.headers.get("retry-after")),
        )
    return reply


# The shortest wait honoured from a Retry-After (a server answering 0 means "at once",
# and a tight loop against it helps nobody).
SHORTEST_RETRY_AFTER = 0.05


def _repeatable_error(exc: ProviderError) -> bool:
    return exc.retryable


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    base: float = 0.25,
    cap: float = 2.0,
    budget: float | None = None,
    again: Callable[[ProviderError], bool] = _repeatable_error,
) -> T:
    """``call`` again after failures ``again`` accepts (by default: retryable ones), at most
    ``attempts`` times in all.

    Two ways to wait, for two kinds of caller:
    - an admin waiting for an answer (no ``budget``): the longer of the backoff and the
      server's ``Retry-After``, and no single wait beyond twice ``cap`` (a server asking
      for longer gets its answer: try later);
    - a job with a ``budget`` of seconds in all (Graph's calls): the server's
      ``Retry-After`` as sent (at least ``SHORTEST_RETRY_AFTER``), else the backoff, while
      the waits together stay within the budget.

    Deliveries do not retry here: they retry through the outbox, so that a retry survives
    a restart.
    """
    waited = 0.0
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ProviderError as exc:
            if not again(exc) or attempt == attempts:
                raise
            wait = backoff(attempt, base=base, cap=cap)
            if budget is None:
                if exc.retry_after is not None:
                    wait = max(wait, exc.retry_after)
                if wait > cap * 2:
                    raise
            else:
                if exc.retry_after is not None:
                    wait = max(exc.retry_after, SHORTEST_RETRY_AFTER)
                if waited + wait > budget:
                    raise
            waited += wait
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
