"""The CLI's messaging commands: Twilio and CM.com settings, channels, endpoints, dead
letters and conversations. Same service functions and write path as the admin API."""

from __future__ import annotations

from typing import BinaryIO

import click
import orjson
from sqlalchemy import Connection

from gateway.accounts import providers
from gateway.accounts.models import CmSettings, TwilioSettings
from gateway.app import outbox_handlers
from gateway.channels import service as channels
from gateway.channels.models import ChannelCreate, TemplatesSet
from gateway.chat import outbound, reading
from gateway.chat.models import ConversationStart, ReplyCreate, TemplateOut
from gateway.chat.outbound import Outgoing
from gateway.cli.common import JSON, Tools, emit, fail, model_of, plain, run_with_tools
from gateway.delivery import endpoints
from gateway.delivery.templates import ProviderTemplates
from gateway.events.service import OPERATOR_CLI
from gateway.media.outbound import ProviderMediaCheck


@click.command("set-twilio")
@click.argument("account_id")
@click.option("--name", required=True, help="A name for the integration.")
@click.option("--account-sid", required=True, help="The Twilio Account SID (AC...).")
@click.option(
    "--auth-token",
    required=True,
    envvar="CLOUDLINK_TWILIO_AUTH_TOKEN",
    help="The Auth Token (stored encrypted); or set CLOUDLINK_TWILIO_AUTH_TOKEN to keep it "
    "out of the process list and shell history.",
)
@JSON
def set_twilio(
    account_id: str, name: str, account_sid: str, auth_token: str, as_json: bool
) -> None:
    """Connect the account's Twilio account (the pair is checked with Twilio first)."""
    body = model_of(TwilioSettings, name=name, account_sid=account_sid, auth_token=auth_token)

    async def work(tools: Tools) -> object:
        return await providers.configure_twilio(
            tools.db,
            secrets=tools.secrets,
            twilio=tools.providers.twilio,
            account_id=account_id,
            body=body,
            actor=OPERATOR_CLI,
            public_url=tools.settings.public_url,
        )

    item = run_with_tools(work)
    emit(plain(item), as_json, f"twilio configured for {account_id}")


@click.command("set-cm")
@click.argument("account_id")
@click.option("--name", required=True, help="A name for the integration.")
@click.option("--cm-account-id", required=True, help="The CM.com account ID.")
@click.option(
    "--product-token",
    required=True,
    envvar="CLOUDLINK_CM_PRODUCT_TOKEN",
    help="The product token (stored encrypted); or set CLOUDLINK_CM_PRODUCT_TOKEN to keep it "
    "out of the process list and shell history.",
)
@JSON
def set_cm(
    *, account_id: str, name: str, cm_account_id: str, product_token: str, as_json: bool
) -> None:
    """Connect the account's CM.com account."""
    body = model_of(CmSettings, name=name, cm_account_id=cm_account_id, product_token=product_token)

    async def work(tools: Tools) -> object:
        return await providers.configure_cm(
            tools.db,
            secrets=tools.secrets,
            account_id=account_id,
            body=body,
            actor=OPERATOR_CLI,
            public_url=tools.settings.public_url,
        )

    item = run_with_tools(work)
    emit(plain(item), as_json, f"cmcom configured for {account_id}")


@click.group()
def channel() -> None:
    """Messaging channels (WhatsApp, SMS, Messenger) bound to chat queues."""


@channel.command("add")
@click.argument("account_id")
@click.option("--provider", required=True, type=click.Choice(["twilio", "cm"]))
@click.option("--type", "kind", required=True, type=click.Choice(["whatsapp", "sms", "messenger"]))
@click.option("--number", default=None, help="WhatsApp / SMS: the number, E.164.")
@click.option("--page", "pages", multiple=True, help="Messenger: a page id (repeatable).")
@click.option("--queue", "queue_id", required=True, help="The chat queue's id.")
@JSON
def channel_add(
    *,
    account_id: str,
    provider: str,
    kind: str,
    number: str | None,
    pages: tuple[str, ...],
    queue_id: str,
    as_json: bool,
) -> None:
    """Add a channel; prints its id and the webhook URL."""
    body = model_of(
        ChannelCreate,
        provider=provider,
        type=kind,
        number=number,
        pages=list(pages),
        queue_id=queue_id,
    )

    async def work(tools: Tools) -> object:
        return await channels.add_channel(
            tools.db,
            secrets=tools.secrets,
            twilio=tools.providers.twilio,
            account_id=account_id,
            body=body,
            actor=OPERATOR_CLI,
            public_url=tools.settings.public_url,
        )

    created = run_with_tools(work)
    shown = plain(created)
    emit(shown, as_json, f"{shown['id']}  {shown['webhook_url']}  ({shown['webhook_setup']})")


@channel.command("list")
@click.argument("account_id")
@JSON
def channel_list(account_id: str, as_json: bool) -> None:
    """List the account's channels and their webhook URLs."""

    async def work(tools: Tools) -> object:
        return await channels.list_channels(
            tools.db,
            secrets=tools.secrets,
            account_id=account_id,
            public_url=tools.settings.public_url,
        )

    items = plain(run_with_tools(work))
    emit(
        items,
        as_json,
        "\n".join(
            f"{i['id']}  {i['provider']} {i['type']} {i.get('number') or ','.join(i['pages'])}"
            f"  queue {i['queue_id']}  {i['webhook_url']}"
            for i in items
        ),
    )


@channel.command("delete")
@click.argument("account_id")
@click.argument("channel_ids", nargs=-1, required=True)
@click.option("--confirm", required=True, help='Type "confirm" to delete.')
def channel_delete(account_id: str, channel_ids: tuple[str, ...], confirm: str) -> None:
    """Delete channels (all or none)."""

    async def work(tools: Tools) -> list[str]:
        return await channels.delete_channels(
            tools.db,
            account_id=account_id,
            ids=list(channel_ids),
            confirm=confirm,
            actor=OPERATOR_CLI,
            public_url=tools.settings.public_url,
        )

    for deleted in run_with_tools(work):
        click.echo(f"deleted {deleted}")


@click.group()
def endpoint() -> None:
    """CloudLink endpoints that receive the account's events (Standard Webhooks)."""


@endpoint.command("add")
@click.argument("account_id")
@click.option("--url", required=True, help="https URL of the receiver.")
@JSON
def endpoint_add(account_id: str, url: str, as_json: bool) -> None:
    """Add an endpoint; prints its id and its whsec_ secret (shown once)."""

    async def work(tools: Tools) -> object:
        return await endpoints.add_endpoint(
            tools.db,
            secrets=tools.secrets,
            account_id=account_id,
            url=url,
            allow_private=tools.settings.allow_private_endpoints,
            actor=OPERATOR_CLI,
        )

    shown = plain(run_with_tools(work))
    emit(shown, as_json, f"{shown['id']}  secret {shown['secret']} (shown once)")


@endpoint.command("list")
@click.argument("account_id")
@JSON
def endpoint_list(account_id: str, as_json: bool) -> None:
    """List the account's endpoints."""

    async def work(tools: Tools) -> object:
        return await endpoints.list_endpoints(tools.db, account_id=account_id)

    items = plain(run_with_tools(work))
    emit(items, as_json, "\n".join(f"{i['id']}  {i['status']}  {i['url']}" for i in items))


def _toggle(name: str, enabled: bool) -> None:
    @endpoint.command(name)
    @click.argument("account_id")
    @click.argument("endpoint_id")
    def command(account_id: str, endpoint_id: str) -> None:
        async def work(tools: Tools) -> object:
            return await endpoints.set_endpoint_enabled(
                tools.db,
                account_id=account_id,
                endpoint_id=endpoint_id,
                enabled=enabled,
                actor=OPERATOR_CLI,
            )

        run_with_tools(work)
        click.echo(f"{name}d {endpoint_id}")

    command.__doc__ = f"{name.capitalize()} an endpoint."


_toggle("enable", True)
_toggle("disable", False)


@endpoint.command("remove")
@click.argument("account_id")
@click.argument("endpoint_id")
def endpoint_remove(account_id: str, endpoint_id: str) -> None:
    """Remove an endpoint (its pending deliveries are dropped)."""

    async def work(tools: Tools) -> None:
        await endpoints.remove_endpoint(
            tools.db, account_id=account_id, endpoint_id=endpoint_id, actor=OPERATOR_CLI
        )

    run_with_tools(work)
    click.echo(f"removed {endpoint_id}")


@click.group("deadletter")
def dead_letter() -> None:
    """Deliveries that ran out of attempts."""


@dead_letter.command("list")
@click.argument("account_id")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", help="Continue a listing: the cursor its last page ended with.")
@JSON
def dead_letter_list(account_id: str, limit: int, before: str | None, as_json: bool) -> None:
    """List dead letters, most recently failed first, with their last error.

    A page that is not the last ends with a line on stderr naming its cursor. With
    --json, stdout stays the list of dead letters it always was, and each carries the
    ``cursor`` a listing continued after it starts from (--before): the last one's is
    the next page's.
    """

    async def work(tools: Tools) -> endpoints.DeadLetterPage:
        return await endpoints.dead_letters(
            tools.db, account_id=account_id, limit=limit, before=before
        )

    page = run_with_tools(work)
    items = [
        {**plain(item), "cursor": cursor}
        for item, cursor in zip(page.items, page.cursors, strict=True)
    ]
    emit(
        items,
        as_json,
        "\n".join(f"{i['id']}  {i['kind']}  {i['target_id']}  {i['error']}" for i in items),
    )
    if page.next_cursor is not None:
        click.echo(f"more: --before {page.next_cursor}", err=True)


@dead_letter.command("replay")
@click.argument("account_id")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
def dead_letter_replay(account_id: str, ids: tuple[str, ...], replay_all: bool) -> None:
    """Deliver dead letters again (by id, or --all)."""

    async def work(tools: Tools) -> int:
        return await endpoints.replay(
            tools.db,
            handlers=outbox_handlers(tools.db, tools.secrets, tools.providers, tools.settings),
            account_id=account_id,
            ids=list(ids),
            replay_all=replay_all,
            actor=OPERATOR_CLI,
        )

    click.echo(f"replayed {run_with_tools(work)}")


@click.group()
def conversation() -> None:
    """Conversations of an account's channels."""


@conversation.command("list")
@click.argument("account_id")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@JSON
def conversation_list(account_id: str, limit: int, as_json: bool) -> None:
    """List conversations, most recently active first."""

    async def work(tools: Tools) -> object:
        def read(conn: Connection) -> object:
            return reading.conversation_page(
                conn,
                account_id,
                status=None,
                channel_id=None,
                before=None,
                limit=limit,
            )[0]

        return await tools.db.query(read)

    items = plain(run_with_tools(work))
    emit(
        items,
        as_json,
        "\n".join(
            f"{i['id']}  {i['status']}  {i['address']}  {i.get('name') or ''}"
            + (f"  window until {i['window_closes_at']}" if i.get("window_closes_at") else "")
            for i in items
        ),
    )


TEMPLATE = click.option(
    "--template", "template_id", help="An approved WhatsApp template's id (see template list)."
)
VARIABLE = click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="A template variable's value (repeat for each).",
)


MEDIA = click.option(
    "--media", "media", multiple=True, metavar="URL", help="A medium to send (repeatable)."
)


def _body(
    text: str | None,
    template_id: str | None,
    variables: tuple[str, ...],
    media: tuple[str, ...] = (),
) -> ReplyCreate:
    """The message the options give, validated as the API validates a reply's body."""
    values: dict[str, str] = {}
    for item in variables:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--var {item!r}: give NAME=VALUE.")
        values[name] = value
    given: dict[str, object] = {"text": text} if text is not None else {}
    if template_id:
        given["template"] = {"id": template_id, "variables": values}
    if media:
        given["media"] = [{"url": url} for url in media]
    return model_of(ReplyCreate, **given)


def _catalog(tools: Tools) -> ProviderTemplates:
    return ProviderTemplates(tools.db, tools.secrets, tools.providers, tools.settings)


async def _outgoing(
    tools: Tools, account_id: str, channel_of: outbound.ChannelOf, body: ReplyCreate
) -> Outgoing:
    return await outbound.checked_outgoing(
        _catalog(tools),
        ProviderMediaCheck(tools.db, tools.providers, tools.settings),
        account_id,
        channel_of,
        body,
    )


@conversation.command("reply")
@click.argument("account_id")
@click.argument("conversation_id")
@click.option("--text", help="The reply (within WhatsApp's 24-hour window).")
@TEMPLATE
@VARIABLE
@MEDIA
@JSON
def conversation_reply(
    account_id: str,
    conversation_id: str,
    *,
    text: str | None,
    template_id: str | None,
    variables: tuple[str, ...],
    media: tuple[str, ...],
    as_json: bool,
) -> None:
    """Send an agent's reply: text and/or media, or a template (queued; the server's
    workers send it)."""
    body = _body(text, template_id, variables, media)

    async def work(tools: Tools) -> object:
        channel_of = outbound.channel_of_conversation(tools.db, account_id, conversation_id)
        return await outbound.queue_reply(
            tools.db,
            account_id=account_id,
            conversation_id=conversation_id,
            outgoing=await _outgoing(tools, account_id, channel_of, body),
            actor=OPERATOR_CLI,
        )

    shown = plain(run_with_tools(work))
    emit(shown, as_json, f"{shown['id']}  {shown['status']}")


@conversation.command("start")
@click.argument("account_id")
@click.option("--channel", "channel_id", required=True, help="The channel's id.")
@click.option("--to", "address", required=True, help="The contact's number in E.164.")
@click.option("--text", help="Free text (SMS; WhatsApp needs a template).")
@TEMPLATE
@VARIABLE
@MEDIA
@JSON
def conversation_start(
    account_id: str,
    *,
    channel_id: str,
    address: str,
    text: str | None,
    template_id: str | None,
    variables: tuple[str, ...],
    media: tuple[str, ...],
    as_json: bool,
) -> None:
    """Start a conversation with a contact by sending it a first message."""
    body = _body(text, template_id, variables, media)
    model_of(
        ConversationStart,
        **body.model_dump(exclude_none=True),
        channel_id=channel_id,
        address=address,
    )

    async def work(tools: Tools) -> object:
        return await outbound.start_conversation(
            tools.db,
            account_id=account_id,
            channel_id=channel_id,
            address=address,
            outgoing=await _outgoing(tools, account_id, outbound.known_channel(channel_id), body),
            actor=OPERATOR_CLI,
        )

    shown = plain(run_with_tools(work))
    emit(
        shown,
        as_json,
        f"{shown['conversation_id']}  {'opened' if shown['opened'] else 'open already'}  "
        f"message {shown['message']['id']}  {shown['message']['status']}",
    )


@click.group()
def template() -> None:
    """WhatsApp templates of a channel's provider."""


@template.command("list")
@click.argument("account_id")
@click.option("--channel", "channel_id", required=True, help="The channel's id.")
@click.option("--fresh", is_flag=True, help="Read them from the provider now, not the cache.")
@JSON
def template_list(account_id: str, channel_id: str, fresh: bool, as_json: bool) -> None:
    """List the channel's WhatsApp templates with their approval."""

    async def work(tools: Tools) -> object:
        found = await _catalog(tools).templates(account_id, channel_id, fresh=fresh)
        return [TemplateOut.of(t) for t in found]

    items = plain(run_with_tools(work))
    emit(
        items,
        as_json,
        "\n".join(
            f"{i['id']}  {i['name']}  {i['language']}  {i['approval']}"
            f"  variables: {', '.join(v['name'] for v in i['variables']) or 'none'}"
            for i in items
        )
        or "no templates",
    )


@template.command("set")
@click.argument("account_id")
@click.option("--channel", "channel_id", required=True, help="A CM.com WhatsApp channel's id.")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.File("rb"),
    help='A JSON list of templates ({"name", "namespace", "language", "body"}), as '
    "CM.com's Channels portal shows them; - reads standard input.",
)
@JSON
def template_set(account_id: str, channel_id: str, path: BinaryIO, as_json: bool) -> None:
    """Register a CM.com WhatsApp channel's approved templates (replacing the earlier set)."""
    try:
        items = orjson.loads(path.read())
    except orjson.JSONDecodeError as exc:
        fail(f"--file: not JSON ({exc}).")
    body = model_of(TemplatesSet, items=items)

    async def work(tools: Tools) -> object:
        return await channels.set_templates(
            tools.db, account_id=account_id, channel_id=channel_id, body=body, actor=OPERATOR_CLI
        )

    shown = plain(run_with_tools(work))
    emit(shown, as_json, f"{len(shown['items'])} templates registered on {channel_id}")
