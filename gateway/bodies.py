"""Reading request bodies within the configured size limit."""

from __future__ import annotations

from starlette.requests import Request

from gateway.errors import PayloadTooLarge
from gateway.services import services


async def read_body(request: Request) -> bytes:
    """The whole body, or 413 once it passes GATEWAY_MAX_BODY_BYTES (read no further)."""
    limit = services(request).settings.max_body_bytes
    too_large = PayloadTooLarge(
        f"The request body is larger than {limit} bytes (GATEWAY_MAX_BODY_BYTES)."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
