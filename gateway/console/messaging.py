"""Messaging in the console: the Twilio and CM.com settings, the account's channels (a
number picked from the Twilio account's, the webhook URL to paste, deletion after a
confirmation), and its conversations with their messages' delivery status and an
agent's reply. Each form is validated by the admin API's own body model."""

from __future__ import annotations

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import models as account_models
from gateway.accounts import providers
from gateway.accounts import service as accounts
from gateway.accounts.models import AccountOut
from gateway.channels import models as channel_models
from gateway.channels import service as channels
from gateway.channels.models import ChannelOut
from gateway.chat import outbound, reading
from gateway.chat.models import STATUS_RANK, ConversationOut, MessageOut, ReplyCreate
from gateway.console.forms import filled
from gateway.console.guard import signed_in
from gateway.console.pages import Console
from gateway.console.views import (
    ACCOUNT,
    CONSOLE,
    account_page,
    base,
    confirm_page,
    confirmed,
    integrations,
    redirect,
)
from gateway.web.bodies import validated
from gateway.web.errors import GatewayError, NotFound
from gateway.web.routing import TemplateRoute

CONVERSATIONS_PER_PAGE = 50
PROVIDERS = {"twilio": ("Twilio", account_models.TWILIO), "cm": ("CM.com", account_models.CMCOM)}


@signed_in
async def provider_settings(request: Request, console: Console) -> Response:
    """Twilio's or CM.com's settings: shown, and saved (checked with the provider first)."""
    account_id = request.path_params["account_id"]
    provider = request.path_params["provider"]
    if provider not in PROVIDERS:
        raise NotFound(f"No provider {provider!r}: twilio or cm.")
    account = await accounts.get_account(console.state.db, account_id=account_id)
    name, kind = PROVIDERS[provider]
    if request.method == "POST":
        state = console.state
        if provider == "twilio":
            await providers.configure_twilio(
                state.db,
                secrets=state.secrets,
                twilio=state.providers.twilio,
                account_id=account_id,
                body=validated(
                    account_models.TwilioSettings,
                    filled(console.form, "name", "account_sid", "auth_token"),
                ),
                actor=CONSOLE,
                public_url=state.settings.public_url,
            )
        else:
            await providers.configure_cm(
                state.db,
                secrets=state.secrets,
                account_id=account_id,
                body=validated(
                    account_models.CmSettings,
                    filled(console.form, "name", "cm_account_id", "product_token"),
                ),
                actor=CONSOLE,
                public_url=state.settings.public_url,
            )
        return redirect(f"{base(account_id)}/channels", "saved")
    return account_page(
        console,
        "provider.html",
        account,
        tab="channels",
        provider=provider,
        provider_name=name,
        integration=(await integrations(console, account_id)).get(kind),
    )


@signed_in
async def channels_page(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    state = console.state
    account = await accounts.get_account(state.db, account_id=account_id)
    items = await channels.list_channels(
        state.db, secrets=state.secrets, account_id=account_id, public_url=state.settings.public_url
    )
    added = await integrations(console, account_id)
    twilio, cm = added.get(account_models.TWILIO), added.get(account_models.CMCOM)
    numbers: list[str] = []
    numbers_error = None
    if twilio is not None and twilio.status == "active":
        try:
            numbers = await channels.twilio_numbers(
                state.db,
                secrets=state.secrets,
                twilio=state.providers.twilio,
                account_id=account_id,
            )
        except GatewayError as exc:  # the page still shows, with what went wrong
            numbers_error = exc.detail
    return account_page(
        console,
        "channels.html",
        account,
        tab="channels",
        channels=items,
        twilio=twilio,
        cm=cm,
        numbers=numbers,
        numbers_error=numbers_error,
    )


@signed_in
async def add_channel(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    state = console.state
    fields: dict[str, object] = {**filled(console.form, "provider", "type", "number", "queue_id")}
    pages = [page.strip() for page in console.form.get("pages", "").split(",") if page.strip()]
    if pages:
        fields["pages"] = pages
    await channels.add_channel(
        state.db,
        secrets=state.secrets,
        twilio=state.providers.twilio,
        account_id=account_id,
        body=validated(channel_models.ChannelCreate, fields),
        actor=CONSOLE,
        public_url=state.settings.public_url,
    )
    return redirect(f"{base(account_id)}/channels", "channel_added")


@signed_in
async def delete_channel(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    channel_id = request.path_params["channel_id"]
    state = console.state
    if not confirmed(console):

        def read(conn: Connection) -> tuple[AccountOut, ChannelOut]:
            row = channels.account_channel(conn, account_id, channel_id)
            account = accounts.account_out(accounts.require_account(conn, account_id))
            return account, channels.channel_out(row, state.secrets, state.settings.public_url)

        account, channel = await state.db.query(read)
        _ = console._
        return confirm_page(
            console,
            account,
            tab="channels",
            heading=_("Delete this channel?"),
            lines=[
                f"{channel.type} · {channel.number or ', '.join(channel.pages)} · "
                f"{channel.queue_id}",
                _(
                    "Messages to it are no longer received; its conversations and their "
                    "history are kept."
                ),
            ],
            action=f"{base(account_id)}/channels/{channel_id}/delete",
            button=_("Delete"),
        )
    await channels.delete_channels(
        state.db,
        account_id=account_id,
        ids=[channel_id],
        confirm=channel_models.CONFIRMATION,
        actor=CONSOLE,
        public_url=state.settings.public_url,
    )
    return redirect(f"{base(account_id)}/channels", "channels_deleted")


@signed_in
async def conversations_page(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    before = request.query_params.get("before") or None

    def read(conn: Connection) -> tuple[AccountOut, list[ConversationOut], str | None]:
        account = accounts.account_out(accounts.require_account(conn, account_id))
        items, cursor = reading.conversation_page(
            conn,
            account_id,
            status=None,
            channel_id=None,
            before=before,
            limit=CONVERSATIONS_PER_PAGE,
        )
        return account, items, cursor

    account, items, cursor = await console.state.db.query(read)
    return account_page(
        console,
        "conversations.html",
        account,
        tab="conversations",
        conversations=items,
        next_cursor=cursor,
    )


async def _conversation(
    console: Console, account_id: str, conversation_id: str
) -> tuple[AccountOut, ConversationOut, list[MessageOut]]:
    def read(conn: Connection) -> tuple[AccountOut, ConversationOut, list[MessageOut]]:
        account = accounts.account_out(accounts.require_account(conn, account_id))
        conversation = reading.one_conversation(conn, account_id, conversation_id)
        messages = reading.conversation_messages(conn, account_id, conversation_id, limit=200)
        return account, conversation, messages

    return await console.state.db.query(read)


@signed_in
async def conversation_page(request: Request, console: Console) -> Response:
    """One conversation's messages, oldest first, each with its delivery status; with
    htmx, the list alone is polled while a message is still on its way."""
    account_id = request.path_params["account_id"]
    account, conversation, messages = await _conversation(
        console, account_id, request.path_params["conversation_id"]
    )
    return account_page(
        console,
        "conversation.html",
        account,
        tab="conversations",
        conversation=conversation,
        messages=messages,
        in_flight=any(
            m.direction == "outbound" and STATUS_RANK.get(m.status, 4) < 4 for m in messages
        ),
    )


@signed_in
async def reply(request: Request, console: Console) -> Response:
    """An agent's reply: the admin API's checks (window, opt-out, channel), then queued."""
    account_id = request.path_params["account_id"]
    conversation_id = request.path_params["conversation_id"]
    body = validated(ReplyCreate, filled(console.form, "text", "author"))
    state = console.state
    channel_of = outbound.channel_of_conversation(state.db, account_id, conversation_id)
    await outbound.queue_reply(
        state.db,
        account_id=account_id,
        conversation_id=conversation_id,
        outgoing=await outbound.checked_outgoing(
            request.state.templates, request.state.media_check, account_id, channel_of, body
        ),
        actor=CONSOLE,
    )
    return redirect(f"{base(account_id)}/conversations/{conversation_id}", "reply_queued")


ROUTES = [
    TemplateRoute(
        ACCOUNT + "/integrations/{provider}/settings", provider_settings, methods=["GET", "POST"]
    ),
    TemplateRoute(ACCOUNT + "/channels", channels_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/channels", add_channel, methods=["POST"]),
    TemplateRoute(
        ACCOUNT + "/channels/{channel_id}/delete", delete_channel, methods=["GET", "POST"]
    ),
    TemplateRoute(ACCOUNT + "/conversations", conversations_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/conversations/{conversation_id}", conversation_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/conversations/{conversation_id}/reply", reply, methods=["POST"]),
]
