"""Admin API of conversations and messages: parse, call, shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts.service import require_account
from gateway.chat import outbound, reading
from gateway.chat.media import MediaCheck
from gateway.chat.models import (
    CLOSED,
    OPEN,
    ConversationList,
    ConversationOut,
    ConversationStart,
    ConversationStarted,
    MessageList,
    MessageOut,
    ReplyAccepted,
    ReplyCreate,
    TemplateList,
    TemplateOut,
)
from gateway.chat.outbound import ChannelOf, Outgoing, checked_outgoing
from gateway.chat.templates import TemplateCatalog
from gateway.events.service import OPERATOR_API
from gateway.web.auth import require_operator
from gateway.web.bodies import read_model
from gateway.web.errors import InvalidValue
from gateway.web.openapi import ACCOUNT, TEXT, Operation, Param
from gateway.web.params import query_bool, query_int
from gateway.web.responses import model_response

Handler = Callable[[Request], Awaitable[Response]]
MAX_PAGE = 200
CONVERSATION = ACCOUNT + "/conversations/{conversation_id}"


async def list_conversations(request: Request) -> Response:
    state = require_operator(request)
    account_id = request.path_params["account_id"]
    status = request.query_params.get("status")
    if status is not None and status not in (OPEN, CLOSED):
        raise InvalidValue(f"status must be {OPEN} or {CLOSED}.")
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)

    def read(conn: Connection) -> ConversationList:
        require_account(conn, account_id)
        items, cursor = reading.conversation_page(
            conn,
            account_id,
            status=status,
            channel_id=request.query_params.get("channel_id"),
            before=request.query_params.get("before"),
            limit=limit,
        )
        return ConversationList(items=items, next_cursor=cursor)

    return model_response(await state.db.query(read))


async def get_conversation(request: Request) -> Response:
    state = require_operator(request)
    found = await state.db.query(
        reading.one_conversation,
        request.path_params["account_id"],
        request.path_params["conversation_id"],
    )
    return model_response(found)


async def list_messages(request: Request) -> Response:
    state = require_operator(request)
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    items = await state.db.query(
        lambda conn: reading.conversation_messages(
            conn,
            request.path_params["account_id"],
            request.path_params["conversation_id"],
            limit=limit,
        )
    )
    return model_response(MessageList(items=items))


def _catalog(request: Request) -> TemplateCatalog:
    catalog: TemplateCatalog = request.state.templates
    return catalog


def _media_check(request: Request) -> MediaCheck:
    check: MediaCheck = request.state.media_check
    return check


async def outgoing(
    request: Request, account_id: str, channel_of: ChannelOf, body: ReplyCreate
) -> Outgoing:
    """What an agent's body sends: its text and media, or its template, checked against
    the channel's (refused before anything is stored when they do not fit)."""
    return await checked_outgoing(
        _catalog(request), _media_check(request), account_id, channel_of, body
    )


async def reply(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, ReplyCreate)
    account_id = request.path_params["account_id"]
    conversation_id = request.path_params["conversation_id"]
    channel_of = outbound.channel_of_conversation(state.db, account_id, conversation_id)
    accepted = await outbound.queue_reply(
        state.db,
        account_id=account_id,
        conversation_id=conversation_id,
        outgoing=await outgoing(request, account_id, channel_of, body),
        actor=OPERATOR_API,
    )
    return model_response(accepted, 202)


async def start_conversation(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, ConversationStart)
    account_id = request.path_params["account_id"]
    started = await outbound.start_conversation(
        state.db,
        account_id=account_id,
        channel_id=body.channel_id,
        address=body.address,
        outgoing=await outgoing(request, account_id, outbound.known_channel(body.channel_id), body),
        actor=OPERATOR_API,
    )
    return model_response(started, 202)


async def list_templates(request: Request) -> Response:
    require_operator(request)
    templates = await _catalog(request).templates(
        request.path_params["account_id"],
        request.path_params["channel_id"],
        fresh=query_bool(request, "fresh"),
    )
    return model_response(TemplateList(items=[TemplateOut.of(t) for t in templates]))


async def get_message(request: Request) -> Response:
    state = require_operator(request)
    found = await state.db.query(
        reading.one_message, request.path_params["account_id"], request.path_params["message_id"]
    )
    return model_response(found)


CONVERSATION_ID = Param("conversation_id", "A conversation's id.")
CHANNEL_ID = Param("channel_id", "A channel's id.")
MESSAGE_ID = Param("message_id", "A message's id.")
LIMIT = Param("limit", "Items per page.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE})

OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation(
            "GET",
            ACCOUNT + "/conversations",
            "List conversations, most recently active first",
            response=ConversationList,
            query=(
                Param("status", "open or closed.", {"type": "string", "enum": [OPEN, CLOSED]}),
                Param("channel_id", "Only this channel's.", dict(TEXT)),
                Param(
                    "before",
                    "next_cursor of the previous page.",
                    {"type": "string", "pattern": reading.CURSOR_PATTERN},
                ),
                LIMIT,
            ),
        ),
        list_conversations,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/conversations",
            "Start a conversation with a contact by sending it a first message (an approved "
            "template on WhatsApp); a contact's open conversation is used if there is one",
            202,
            ConversationStart,
            ConversationStarted,
            errors=(409, 422, 503),
        ),
        start_conversation,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/channels/{channel_id}/templates",
            "The WhatsApp templates of the channel's provider, with their approval "
            "(kept a minute; ?fresh=true reads them again)",
            response=TemplateList,
            query=(Param("fresh", "true: read them from the provider now.", {"type": "boolean"}),),
            path_params=(CHANNEL_ID,),
            errors=(409, 503),
        ),
        list_templates,
    ),
    (
        Operation(
            "GET",
            CONVERSATION,
            "Get a conversation",
            response=ConversationOut,
            path_params=(CONVERSATION_ID,),
        ),
        get_conversation,
    ),
    (
        Operation(
            "GET",
            CONVERSATION + "/messages",
            "A conversation's latest messages, oldest first",
            response=MessageList,
            query=(LIMIT,),
            path_params=(CONVERSATION_ID,),
        ),
        list_messages,
    ),
    (
        Operation(
            "POST",
            CONVERSATION + "/messages",
            "Send an agent's reply, free text or an approved template (stored and queued; "
            "its status follows)",
            202,
            ReplyCreate,
            ReplyAccepted,
            path_params=(CONVERSATION_ID,),
            errors=(409, 422, 503),
        ),
        reply,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/messages/{message_id}",
            "Get a message with its delivery status",
            response=MessageOut,
            path_params=(MESSAGE_ID,),
        ),
        get_message,
    ),
]
