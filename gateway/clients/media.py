"""Fetching a medium from a provider and passing it on, a chunk at a time.

A medium can be tens of MB; a process serving many at once must hold no more than a
chunk of each. The provider's answer is checked before anything is passed on: its
content type must be one WhatsApp or SMS can carry, its announced length within the cap,
and the cap holds while it streams (a body longer than announced, or announced by none,
is cut off there). Credentials go only to the provider's own origin: Twilio answers a
media URL with a redirect to its CDN, which must not get the account's Auth Token.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from gateway.clients.http import HttpClient, ProviderError

CHUNK = 64 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3
# What WhatsApp, Messenger and MMS carry (their documented types), by family or exactly.
MEDIA_FAMILIES = ("image/", "audio/", "video/")
MEDIA_TYPES = frozenset(
    {
        "application/pdf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/zip",
        "text/plain",
        "text/csv",
        "text/vcard",
        "text/x-vcard",
        "text/calendar",
    }
)
# Types a browser could run as a page or script: never passed on, whatever the family.
ACTIVE_TYPES = frozenset({"image/svg+xml", "text/html", "application/xhtml+xml"})


def passable(content_type: str) -> bool:
    """Whether a medium of ``content_type`` (without parameters) may be passed on."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ACTIVE_TYPES:
        return False
    return kind in MEDIA_TYPES or kind.startswith(MEDIA_FAMILIES)


class MediaRefused(Exception):
    """The provider's medium is not one to pass on: its type, or its size."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


@dataclass
class OpenedMedium:
    """A medium the provider is sending: its type, its length if announced, and its body
    (read once; the answer is released when it ends, fails or is abandoned)."""

    content_type: str
    length: int | None
    chunks: AsyncGenerator[bytes, None]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


async def open_medium(
    http: HttpClient,
    url: str,
    *,
    authorization: str | None,
    auth_origin: str | None,
    max_bytes: int,
    read_timeout: float,
) -> OpenedMedium:
    """Open ``url`` (following up to three redirects) and check what it answers.

    ``authorization`` goes only to URLs of ``auth_origin``'s scheme and host. Raises
    ``ProviderError`` for an answer other than 200 (``retryable`` for 5xx and transport
    failures) and ``MediaRefused`` for a type or announced size not to pass on.
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=read_timeout)
    at = url
    for _ in range(MAX_REDIRECTS + 1):
        headers = {}
        if authorization and auth_origin and _origin(at) == _origin(auth_origin):
            headers["Authorization"] = authorization
        try:
            response = await http.get(at, headers=headers, allow_redirects=False, timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(
                f"fetching the medium: {type(exc).__name__}", retryable=True
            ) from exc
        if response.status in REDIRECTS and response.headers.get("Location"):
            at = urljoin(at, response.headers["Location"])
            response.release()
            continue
        return _checked(response, max_bytes)
    raise ProviderError("fetching the medium: too many redirects", retryable=False)


def _checked(response: aiohttp.ClientResponse, max_bytes: int) -> OpenedMedium:
    if response.status != 200:
        response.release()
        raise ProviderError(
            f"fetching the medium: HTTP {response.status}",
            retryable=response.status >= 500 or response.status == 429,
            status=response.status,
        )
    content_type = response.headers.get("Content-Type", "application/octet-stream")
    if not passable(content_type):
        response.release()
        raise MediaRefused(f"its type, {content_type[:100]}, is not one WhatsApp or SMS carries")
    length = response.content_length
    if length is not None and length > max_bytes:
        response.release()
        raise MediaRefused(
            f"it is {length} bytes, more than GATEWAY_MEDIA_MAX_BYTES ({max_bytes})",
            too_large=True,
        )
    return OpenedMedium(content_type, length, _body(response, max_bytes))


async def _body(response: aiohttp.ClientResponse, max_bytes: int) -> AsyncGenerator[bytes, None]:
    """The body a chunk at a time, cut off past ``max_bytes``; the connection is closed
    rather than reused when the body is not read to its end."""
    passed = 0
    complete = False
    try:
        async for chunk in response.content.iter_chunked(CHUNK):
            passed += len(chunk)
            if passed > max_bytes:
                raise MediaRefused(
                    f"it passed GATEWAY_MEDIA_MAX_BYTES ({max_bytes})", too_large=True
                )
            yield chunk
        complete = True
    finally:
        if complete:
            response.release()
        else:
            response.close()
