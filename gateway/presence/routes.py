"""Admin API of presence: CloudLink presence changes in, the user check out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.events.service import OPERATOR_API
from gateway.presence import models
from gateway.presence import service as presence
from gateway.web.auth import require_operator
from gateway.web.bodies import read_model
from gateway.web.openapi import ACCOUNT, Operation, Param
from gateway.web.responses import model_response

Handler = Callable[[Request], Awaitable[Response]]


async def change_presence(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.PresenceChange)
    accepted = await presence.change_cloudlink_presence(
        state.db, account_id=request.path_params["account_id"], change=body, actor=OPERATOR_API
    )
    return model_response(accepted, 202)


async def check_presence(request: Request) -> Response:
    state = require_operator(request)
    found = await presence.user_check(
        state.db,
        account_id=request.path_params["account_id"],
        email=request.path_params["email"][:320],
    )
    return model_response(found)


EMAIL = Param(
    "email",
    "The user's email address; one no user of the account has is answered 404.",
    {"type": "string", "maxLength": 320},
)

OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation(
            "POST",
            ACCOUNT + "/presence",
            "Report a CloudLink presence change (written into Teams when the account does so)",
            202,
            models.PresenceChange,
            models.Accepted,
        ),
        change_presence,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/presence/{email}",
            "A user's presence: per source, combined, and the raw Teams data",
            response=models.PresenceCheck,
            path_params=(EMAIL,),
        ),
        check_presence,
    ),
]
