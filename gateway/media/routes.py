"""Media routes: the admin API's (operator token) and the signed links' (no token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.chat.media import MEDIA_PREFIX, link_holds
from gateway.media.service import MAX_MEDIA, medium_source, stream_medium
from gateway.web.auth import require_operator
from gateway.web.errors import Forbidden, InvalidValue
from gateway.web.openapi import ACCOUNT, Operation, Param
from gateway.web.params import parse_int
from gateway.web.routing import TemplateRoute
from gateway.web.state import app_state

Handler = Callable[[Request], Awaitable[Response]]


def _index(request: Request) -> int:
    index = parse_int(request.path_params["index"], "index")
    if not 0 <= index < MAX_MEDIA:
        raise InvalidValue(f"index must be 0 to {MAX_MEDIA - 1}.")
    return index


async def get_medium(request: Request) -> Response:
    state = require_operator(request)
    source = await state.db.query(
        medium_source,
        state,
        request.path_params["account_id"],
        request.path_params["message_id"],
        _index(request),
    )
    return await stream_medium(state, source)


async def get_linked_medium(request: Request) -> Response:
    """A medium by a signed link: no token, the link's signature and expiry instead."""
    state = app_state(request)
    account_id = request.path_params["account_id"]
    message_id = request.path_params["message_id"]
    index = _index(request)
    if not link_holds(
        state.secrets,
        account_id=account_id,
        message_id=message_id,
        index=index,
        expires=request.query_params.get("expires", ""),
        signature=request.query_params.get("signature", ""),
    ):
        raise Forbidden("The link is not valid, or it has expired: ask for the event again.")
    source = await state.db.query(medium_source, state, account_id, message_id, index)
    return await stream_medium(state, source)


OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation(
            "GET",
            ACCOUNT + "/messages/{message_id}/media/{index}",
            "A message's medium, fetched from the provider with the account's credentials "
            "(its type and size checked, streamed)",
            media_type="*/*",
            path_params=(
                Param("message_id", "A message's id."),
                Param(
                    "index",
                    "Which medium, from 0.",
                    {"type": "integer", "minimum": 0, "maximum": MAX_MEDIA - 1},
                ),
            ),
            errors=(409, 422),
        ),
        get_medium,
    ),
]

LINK_ROUTES = [
    TemplateRoute(
        MEDIA_PREFIX + "/{account_id}/{message_id}/{index}", get_linked_medium, methods=["GET"]
    ),
]
