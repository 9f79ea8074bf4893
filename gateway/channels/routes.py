"""Admin API of channels: parse, call a service function, shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.channels import models
from gateway.channels import service as channels
from gateway.events.service import OPERATOR_API
from gateway.web.auth import require_operator
from gateway.web.bodies import read_model
from gateway.web.openapi import ACCOUNT, Operation, Param
from gateway.web.responses import model_response

Handler = Callable[[Request], Awaitable[Response]]


async def list_channels(request: Request) -> Response:
    state = require_operator(request)
    items = await channels.list_channels(
        state.db,
        secrets=state.secrets,
        account_id=request.path_params["account_id"],
        public_url=state.settings.public_url,
    )
    return model_response(models.ChannelList(items=items))


async def add_channel(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.ChannelCreate)
    created = await channels.add_channel(
        state.db,
        secrets=state.secrets,
        twilio=state.providers.twilio,
        account_id=request.path_params["account_id"],
        body=body,
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(created, 201)


async def delete_channels(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.ChannelsDelete)
    deleted = await channels.delete_channels(
        state.db,
        account_id=request.path_params["account_id"],
        ids=body.ids,
        confirm=body.confirm,
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(models.DeletedChannels(deleted=deleted))


async def set_templates(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.TemplatesSet)
    registered = await channels.set_templates(
        state.db,
        account_id=request.path_params["account_id"],
        channel_id=request.path_params["channel_id"],
        body=body,
        actor=OPERATOR_API,
    )
    return model_response(registered)


OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation(
            "GET",
            ACCOUNT + "/channels",
            "List an account's channels with their webhook URLs",
            response=models.ChannelList,
        ),
        list_channels,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/channels",
            "Add a channel (Twilio numbers are checked; Twilio SMS gets its URL set)",
            201,
            models.ChannelCreate,
            models.ChannelOut,
            errors=(409, 422),
        ),
        add_channel,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/channels/delete",
            'Delete channels (all or none); "confirm" must be "confirm"',
            body=models.ChannelsDelete,
            response=models.DeletedChannels,
        ),
        delete_channels,
    ),
    (
        Operation(
            "PUT",
            ACCOUNT + "/channels/{channel_id}/templates",
            "Register a CM.com WhatsApp channel's approved templates, as CM.com's Channels "
            "portal shows them (replaces the earlier set; Twilio's are read from Twilio)",
            body=models.TemplatesSet,
            response=models.TemplatesRegistered,
            path_params=(Param("channel_id", "A channel's id."),),
            errors=(409, 422),
        ),
        set_templates,
    ),
]
