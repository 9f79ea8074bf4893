"""Admin API of CloudLink endpoints and dead letters: parse, call, shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response

from gateway.delivery import endpoints
from gateway.delivery.models import (
    DeadLetterList,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointOut,
    ReplayRequest,
    ReplayResult,
)
from gateway.events.service import OPERATOR_API
from gateway.outbox.worker import Handler as OutboxHandler
from gateway.web.auth import require_operator
from gateway.web.bodies import read_model
from gateway.web.openapi import ACCOUNT, Header, Operation, Param
from gateway.web.params import query_int
from gateway.web.responses import model_response

Handler = Callable[[Request], Awaitable[Response]]
ENDPOINT = ACCOUNT + "/endpoints/{endpoint_id}"
MAX_PAGE = 500


async def list_endpoints(request: Request) -> Response:
    state = require_operator(request)
    items = await endpoints.list_endpoints(state.db, account_id=request.path_params["account_id"])
    return model_response(EndpointList(items=items))


async def add_endpoint(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, EndpointCreate)
    created = await endpoints.add_endpoint(
        state.db,
        secrets=state.secrets,
        account_id=request.path_params["account_id"],
        url=body.url,
        allow_private=state.settings.allow_private_endpoints,
        actor=OPERATOR_API,
    )
    return model_response(created, 201, headers={"Cache-Control": "no-store"})


async def remove_endpoint(request: Request) -> Response:
    state = require_operator(request)
    await endpoints.remove_endpoint(
        state.db,
        account_id=request.path_params["account_id"],
        endpoint_id=request.path_params["endpoint_id"],
        actor=OPERATOR_API,
    )
    return Response(status_code=204)


def _toggle(enabled: bool) -> Handler:
    async def handler(request: Request) -> Response:
        state = require_operator(request)
        found = await endpoints.set_endpoint_enabled(
            state.db,
            account_id=request.path_params["account_id"],
            endpoint_id=request.path_params["endpoint_id"],
            enabled=enabled,
            actor=OPERATOR_API,
        )
        return model_response(found)

    return handler


async def list_dead_letters(request: Request) -> Response:
    state = require_operator(request)
    page = await endpoints.dead_letters(
        state.db,
        account_id=request.path_params["account_id"],
        limit=query_int(request, "limit", 100, 1, MAX_PAGE),
        before=request.query_params.get("before"),
    )
    return model_response(DeadLetterList(items=page.items, next_cursor=page.next_cursor))


async def replay(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, ReplayRequest)
    handlers: Mapping[str, OutboxHandler] = request.state.outbox_handlers
    count = await endpoints.replay(
        state.db,
        handlers=handlers,
        account_id=request.path_params["account_id"],
        ids=body.ids,
        replay_all=body.all,
        actor=OPERATOR_API,
    )
    return model_response(ReplayResult(replayed=count))


ENDPOINT_ID = Param("endpoint_id", "An endpoint's id.")
NO_STORE = Header(
    "Cache-Control",
    "The signing secret must not be kept by caches.",
    {"type": "string", "const": "no-store"},
)

OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation("GET", ACCOUNT + "/endpoints", "List CloudLink endpoints", response=EndpointList),
        list_endpoints,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/endpoints",
            "Add a CloudLink endpoint (its whsec_ secret is shown once)",
            201,
            EndpointCreate,
            EndpointCreated,
            headers=(NO_STORE,),
            errors=(422,),
        ),
        add_endpoint,
    ),
    (
        Operation(
            "DELETE",
            ENDPOINT,
            "Remove an endpoint (its pending deliveries are dropped)",
            204,
            path_params=(ENDPOINT_ID,),
        ),
        remove_endpoint,
    ),
    (
        Operation(
            "POST",
            ENDPOINT + "/enable",
            "Enable an endpoint (e.g. after it answered 410)",
            response=EndpointOut,
            path_params=(ENDPOINT_ID,),
        ),
        _toggle(True),
    ),
    (
        Operation(
            "POST",
            ENDPOINT + "/disable",
            "Disable an endpoint",
            response=EndpointOut,
            path_params=(ENDPOINT_ID,),
        ),
        _toggle(False),
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/dead-letters",
            "Deliveries that ran out of attempts, most recently failed first",
            response=DeadLetterList,
            query=(
                Param(
                    "before",
                    "next_cursor of the previous page.",
                    {"type": "string", "pattern": endpoints.CURSOR_PATTERN},
                ),
                Param(
                    "limit",
                    "Items per page.",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                ),
            ),
        ),
        list_dead_letters,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/dead-letters/replay",
            "Deliver dead letters again (by id, or all)",
            body=ReplayRequest,
            response=ReplayResult,
        ),
        replay,
    ),
]
