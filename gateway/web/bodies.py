"""Reading request bodies: within the size limit, as JSON of bounded depth, without NUL.

Every JSON body goes through ``read_json``: the decoder (orjson, in C) accepts up to
1,024 levels; the depth is then checked without recursion, so nothing that walks the
value afterwards (pydantic, scim2-models, our own checks) sees a document deeper than
``MAX_JSON_DEPTH``. Entra never sends more than four levels.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from gateway.nul import NUL_DETAIL, TooDeep, mend_decoded, without_nul
from gateway.web.errors import InvalidSyntax, InvalidValue, PayloadTooLarge
from gateway.web.state import app_state

MAX_JSON_DEPTH = 32
M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, *, limit: int | None = None) -> bytes:
    """The whole body, or 413 once it passes the limit (read no further).

    The limit is GATEWAY_MAX_BODY_BYTES, or ``limit`` when a surface expects less.
    """
    configured = app_state(request).settings.max_body_bytes
    limit = configured if limit is None else min(limit, configured)
    too_large = PayloadTooLarge(
        f"The request body is larger than {limit} bytes"
        + (" (GATEWAY_MAX_BODY_BYTES)." if limit == configured else ".")
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


class NulPolicy(enum.Enum):
    """What a decoded NUL character gets (see ``gateway.nul``)."""

    REFUSE = "refuse"
    REPLACE = "replace"


def _refuse_nul(_text: str) -> str:
    raise InvalidValue(NUL_DETAIL)


def check_decoded(value: dict[str, Any] | list[Any], nul: NulPolicy = NulPolicy.REFUSE) -> None:
    """Refuse JSON deeper than ``MAX_JSON_DEPTH``, and refuse or replace (in place) every
    NUL of its keys and strings, in one walk."""
    try:
        mend_decoded(
            value,
            _refuse_nul if nul is NulPolicy.REFUSE else without_nul,
            max_depth=MAX_JSON_DEPTH,
        )
    except TooDeep:
        raise InvalidSyntax(
            f"The body nests arrays and objects deeper than {MAX_JSON_DEPTH}."
        ) from None


def decode_json_object(body: bytes, *, nul: NulPolicy = NulPolicy.REFUSE) -> dict[str, Any]:
    """Parse a JSON object body of bounded depth, or refuse with 400 ``invalidSyntax``.

    ``nul``: refuse a NUL character anywhere in it (400), or replace it (a provider's).
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidSyntax(f"The body is not valid JSON: {exc}.") from exc
    if not isinstance(value, dict):
        raise InvalidSyntax("The body must be a JSON object.")
    check_decoded(value, nul)
    return value


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object (size, syntax, depth and NUL checked)."""
    return decode_json_object(await read_body(request))


async def read_model(request: Request, model: type[M]) -> M:
    """The JSON body validated as ``model`` (400 naming each wrong field)."""
    return validated(model, await read_json(request))


def validated(model: type[M], raw: dict[str, Any]) -> M:
    """``raw`` validated as ``model``, or 400 naming each wrong field: one validation for a
    JSON body and for the console's forms."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidValue(detail) from exc
