"""Admin API of conversations and messages: parse, call, shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts.service import require_account
from gateway.chat import reading
from gateway.chat import service as chat
from gateway.chat.models import (
    CLOSED,
    OPEN,
    ConversationList,
    ConversationOut,
    MessageList,
    MessageOut,
    ReplyAccepted,
    ReplyCreate,
)
from gateway.events.service import OPERATOR_API
from gateway.web.auth import require_operator
from gateway.web.bodies import read_model
from gateway.web.errors import InvalidValue
from gateway.web.openapi import ACCOUNT, TEXT, Operation, Param
from gateway.web.params import query_int
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


async def reply(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, ReplyCreate)
    accepted = await chat.queue_reply(
        state.db,
        account_id=request.path_params["account_id"],
        conversation_id=request.path_params["conversation_id"],
        text=body.text,
        author=body.author,
        actor=OPERATOR_API,
    )
    return model_response(accepted, 202)


async def get_message(request: Request) -> Response:
    state = require_operator(request)
    found = await state.db.query(
        reading.one_message, request.path_params["account_id"], request.path_params["message_id"]
    )
    return model_response(found)


CONVERSATION_ID = Param("conversation_id", "A conversation's id.")
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
            "Send an agent's reply (stored and queued; its status follows)",
            202,
            ReplyCreate,
            ReplyAccepted,
            path_params=(CONVERSATION_ID,),
            errors=(409,),
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
