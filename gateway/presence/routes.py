"""Admin API of presence: CloudLink presence changes in, the user check out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.accounts.models import IntegrationOut, TeamsSettings
from gateway.events.service import OPERATOR_API
from gateway.presence import check, models, monitors, sign_in
from gateway.presence import service as presence
from gateway.web.auth import require_operator
from gateway.web.bodies import read_model
from gateway.web.openapi import ACCOUNT, Header, Operation, Param
from gateway.web.pages import page
from gateway.web.responses import model_response
from gateway.web.routing import TemplateRoute
from gateway.web.state import app_state

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


async def add_monitor(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.MonitorAdd)
    added = await monitors.add_monitor(
        state.db,
        secrets=state.secrets,
        public_url=state.settings.public_url,
        account_id=request.path_params["account_id"],
        upn=body.upn,
        actor=OPERATOR_API,
    )
    return model_response(added, 201, headers={"Cache-Control": "no-store"})


async def list_monitors(request: Request) -> Response:
    state = require_operator(request)
    found = await monitors.list_monitors(state.db, account_id=request.path_params["account_id"])
    return model_response(found)


async def renew_monitor(request: Request) -> Response:
    state = require_operator(request)
    renewed = await monitors.renew_monitor(
        state.db,
        secrets=state.secrets,
        public_url=state.settings.public_url,
        account_id=request.path_params["account_id"],
        monitor_id=request.path_params["monitor_id"],
    )
    return model_response(renewed, headers={"Cache-Control": "no-store"})


async def delete_monitor(request: Request) -> Response:
    state = require_operator(request)
    await monitors.delete_monitor(
        state.db,
        account_id=request.path_params["account_id"],
        monitor_id=request.path_params["monitor_id"],
        actor=OPERATOR_API,
    )
    return Response(status_code=204)


async def set_teams(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, TeamsSettings)
    item = await monitors.save_teams(
        state.db,
        secrets=state.secrets,
        identity=state.providers.identity,
        account_id=request.path_params["account_id"],
        body=body,
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(item)


async def system_check(request: Request) -> Response:
    state = require_operator(request)
    found = await check.system_check(
        state.db,
        secrets=state.secrets,
        identity=state.providers.identity,
        http=state.providers.http,
        public_url=state.settings.public_url,
        account_id=request.path_params["account_id"],
    )
    return model_response(found)


async def sync_all(request: Request) -> Response:
    state = require_operator(request)
    started = await check.sync_all(state.db, account_id=request.path_params["account_id"])
    return model_response(started, 202)


async def sync_status(request: Request) -> Response:
    state = require_operator(request)
    found = await check.sync_status(state.db, account_id=request.path_params["account_id"])
    return model_response(found)


async def start_sign_in(request: Request) -> Response:
    """GET /oauth/monitor/start: a monitor's link, on to the identity platform's sign-in."""
    state = app_state(request)
    url = await sign_in.start_sign_in(
        state.db,
        secrets=state.secrets,
        identity=state.providers.identity,
        public_url=state.settings.public_url,
        link=request.query_params.get("m", "")[:200],
    )
    return RedirectResponse(url, 302, headers={"Cache-Control": "no-store"})


async def finish_sign_in(request: Request) -> Response:
    """GET /oauth/monitor: back from the sign-in with a code (or an error)."""
    state = app_state(request)
    query = request.query_params
    monitor = await sign_in.finish_sign_in(
        state.db,
        secrets=state.secrets,
        identity=state.providers.identity,
        public_url=state.settings.public_url,
        state=query.get("state", "")[:200],
        code=query.get("code") or None,
        error=query.get("error_description") or query.get("error") or None,
    )
    return page(
        "Presence monitor authorized",
        f"{monitor.upn} is authorized: it will watch the presence of up to 650 users. You "
        "can close this window.",
    )


EMAIL = Param(
    "email",
    "The user's email address; one no user of the account has is answered 404.",
    {"type": "string", "maxLength": 320, "pattern": "@"},
)
MONITOR_ID = Param(
    "monitor_id",
    "A presence monitor's id; an unknown one is answered 404.",
    {"type": "string", "maxLength": 36},
)
MONITORS = ACCOUNT + "/presence/monitors"
NO_STORE = Header(
    "Cache-Control", "The sign-in link must not be kept by caches.", {"type": "string"}
)

OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation(
            "PUT",
            ACCOUNT + "/integrations/microsoft_teams/settings",
            "Configure Microsoft Teams (the app is checked with the identity platform first)",
            body=TeamsSettings,
            response=IntegrationOut,
            errors=(422,),
        ),
        set_teams,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/presence/check",
            "Verify the Teams presence configuration, item by item",
            response=models.SystemCheck,
            errors=(409,),
        ),
        system_check,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/presence/sync",
            "Sync all: every monitor reads back its users' presence",
            202,
            response=models.SyncStatus,
            errors=(409,),
        ),
        sync_all,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/presence/sync",
            "How far sync all has come",
            response=models.SyncStatus,
        ),
        sync_status,
    ),
    (
        Operation(
            "GET",
            MONITORS,
            "List presence monitors, and whether enough are authorized",
            response=models.MonitorList,
        ),
        list_monitors,
    ),
    (
        Operation(
            "POST",
            MONITORS,
            "Add a presence monitor (its authorize_url signs it in)",
            201,
            models.MonitorAdd,
            models.MonitorOut,
            headers=(NO_STORE,),
            errors=(409,),
        ),
        add_monitor,
    ),
    (
        Operation(
            "POST",
            MONITORS + "/{monitor_id}/renew",
            "A new sign-in link for a monitor (retry, renew, copy URL)",
            response=models.MonitorOut,
            path_params=(MONITOR_ID,),
            headers=(NO_STORE,),
        ),
        renew_monitor,
    ),
    (
        Operation(
            "DELETE",
            MONITORS + "/{monitor_id}",
            "Remove a presence monitor (its users move to the others)",
            204,
            path_params=(MONITOR_ID,),
        ),
        delete_monitor,
    ),
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

# The monitor's browser: no operator token, the link and the state are the proof.
BROWSER_ROUTES = [
    TemplateRoute(monitors.START_PATH, start_sign_in, methods=["GET"]),
    TemplateRoute(monitors.CALLBACK_PATH, finish_sign_in, methods=["GET"]),
]
