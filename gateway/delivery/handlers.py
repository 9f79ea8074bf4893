"""What each kind of outbox row does: send a reply, deliver an event, clear a webhook URL.

Handlers read what they need, call the provider (clients never see the database), and
return the change to commit with the row's completion. A ``ProviderError`` decides
between another attempt and a dead letter; ``Dropped`` means the target is gone. A reply
goes out through the sender of its channel's provider (``senders``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from sqlalchemy import Connection, bindparam, select, update

from gateway.accounts.providers import twilio_credentials
from gateway.channels.service import CLEAR_SMS_URL
from gateway.chat.media import with_links
from gateway.chat.models import STATUS_RANK
from gateway.chat.service import SEND, move_status, requeue_failed, set_opt_out
from gateway.clients.cloudlink import EndpointGone, deliver_event
from gateway.clients.http import ProviderError
from gateway.clients.provider_errors import OPTED_OUT, failure_code
from gateway.clients.providers import Providers
from gateway.delivery.senders import Sender, SendPlan, Sent, sender_for, senders
from gateway.events.service import Actor
from gateway.outbox.policy import RetryPolicy
from gateway.outbox.worker import Dropped, Handler, Settle
from gateway.security import SecretBox
from gateway.settings import Settings
from gateway.ttl_cache import TtlCache
from storage import outbox
from storage.engine import Database
from storage.outbox import Claimed, Revived
from storage.rows import EndpointRow, EventRow, MessageRow
from storage.tables import (
    CHANNELS,
    CONTACTS,
    CONVERSATIONS,
    ENDPOINTS,
    MESSAGES,
    utcnow,
)
from storage.tables import (
    EVENTS as EVENT_ROWS,
)
from storage.transaction import EVENT_DELIVERY, Transaction

DELIVERY_ACTOR = Actor("Gateway", "outbox")
log = structlog.get_logger("delivery")
# Seconds to wait after attempt n (1-based) of an event delivery.
EVENT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True)
class Context:
    """What messaging's handlers share: the database, the key ring, the clients, the
    settings, and the providers' credentials for a few seconds."""

    db: Database
    secrets: SecretBox
    providers: Providers
    settings: Settings
    credentials: TtlCache[Any] = field(default_factory=TtlCache)

    def policy(self, name: str) -> RetryPolicy:
        """The retry policy of one kind of delivery, as the settings shape it.

        Events follow the schedule Standard Webhooks producers use: quick first retries,
        then hours apart, about a day in all, so that an endpoint down overnight still gets
        everything. Sends back off from 2 s, a few minutes in all with the default eight
        attempts: a customer waiting for an answer is better told it failed than answered
        late. Upkeep (a deleted channel's URL) keeps trying for about half an hour.
        """
        scale = self.settings.outbox_retry_scale
        if name == "events":
            attempts = self.settings.event_max_attempts
            return RetryPolicy(attempts=attempts, schedule=EVENT_SCHEDULE, scale=scale)
        if name == "sends":
            return RetryPolicy(attempts=self.settings.send_max_attempts, cap=600.0, scale=scale)
        return RetryPolicy(attempts=10, base=5.0, cap=3600.0, scale=scale)


_SEND_PLAN = (
    select(
        MESSAGES.c.id,
        MESSAGES.c.text,
        MESSAGES.c.status_rank,
        MESSAGES.c.template,
        MESSAGES.c.media,
        CONVERSATIONS.c.local_address,
        CONTACTS.c.address.label("contact_address"),
        CHANNELS.c.id.label("channel_id"),
        CHANNELS.c.account_id,
        CHANNELS.c.provider,
        CHANNELS.c.type,
    )
    .join(CONVERSATIONS, CONVERSATIONS.c.id == MESSAGES.c.conversation_id)
    .join(CONTACTS, CONTACTS.c.id == CONVERSATIONS.c.contact_id)
    .join(CHANNELS, CHANNELS.c.id == MESSAGES.c.channel_id)
    .where(MESSAGES.c.id == bindparam("message_id"))
)


def _send_plan(conn: Connection, message_id: str) -> SendPlan:
    row = conn.execute(_SEND_PLAN, {"message_id": message_id}).one_or_none()
    if row is None:
        raise Dropped("the message no longer exists")
    if row.status_rank > STATUS_RANK["pending"]:
        raise Dropped("the message was sent already")
    return SendPlan(
        message_id=row.id,
        text=row.text,
        account_id=row.account_id,
        channel_id=row.channel_id,
        provider=row.provider,
        channel_type=row.type,
        local_address=row.local_address,
        contact_address=row.contact_address,
        template=row.template,
        media=tuple(row.media or ()),
    )


_MESSAGE = select(MESSAGES).where(MESSAGES.c.id == bindparam("message_id"))


def _message_row(conn: Connection, message_id: str) -> MessageRow | None:
    return conn.execute(_MESSAGE, {"message_id": message_id}).one_or_none()


def _opted_out_by_provider(tx: Transaction, message: MessageRow, reason: str) -> None:
    contact = tx.conn.execute(
        select(CONTACTS.c.id, CONTACTS.c.address, CONTACTS.c.name, CONTACTS.c.channel_id)
        .join(CONVERSATIONS, CONVERSATIONS.c.contact_id == CONTACTS.c.id)
        .where(CONVERSATIONS.c.id == message.conversation_id)
    ).one_or_none()
    if contact is not None:
        set_opt_out(
            tx,
            account_id=message.account_id,
            contact=dict(contact._mapping),
            change="out",
            actor=DELIVERY_ACTOR,
            now=utcnow(),
            reason=reason,
        )


def _provider_of(conn: Connection, channel_id: str) -> str | None:
    found: str | None = conn.execute(
        select(CHANNELS.c.provider).where(CHANNELS.c.id == channel_id)
    ).scalar_one_or_none()
    return found


def _taken_elsewhere(conn: Connection, provider_ids: list[str], message_id: str) -> set[str]:
    """Which of ``provider_ids`` other messages of ours already hold."""
    rows = conn.execute(
        select(MESSAGES.c.provider_message_id).where(
            MESSAGES.c.provider_message_id.in_(provider_ids), MESSAGES.c.id != message_id
        )
    )
    return {row.provider_message_id for row in rows}


async def _sent_before(
    ctx: Context, sender: Sender[Any], plan: SendPlan, creds: Any, row: Claimed
) -> Sent | None:
    """The provider's message of an earlier attempt whose answer never came back.

    A message with the same addresses and text that no other reply holds is this one:
    two identical replies in a row each keep their own once settled, and an unsettled
    twin would be found by whichever looks first, each then taking a different one.
    """
    found = await sender.find_sent(plan, creds, row.created_at)
    if not found:
        return None
    taken = await ctx.db.query(
        _taken_elsewhere, [sent.provider_message_id for sent in found], plan.message_id
    )
    for sent in found:
        if sent.provider_message_id not in taken:
            log.info(
                "send_found_already_sent",
                message_id=plan.message_id,
                provider_message_id=sent.provider_message_id,
            )
            return sent
    return None


def send_handler(ctx: Context) -> Handler:
    """Agent replies out through their channel's provider; final failures mark the
    message failed, and a replay of the dead letter moves it back to pending.

    A reply whose earlier attempt may have reached the provider (its process died
    mid-call, the call went unanswered) is looked up there first and sent only if the
    provider does not hold it: the customer gets it once.
    """
    found = senders(ctx.providers, ctx.settings)

    async def run(row: Claimed) -> Settle | None:
        plan = await ctx.db.query(_send_plan, row.target_id)
        sender = sender_for(found, plan.provider)
        creds = await ctx.credentials.get(
            f"{plan.provider}:{plan.account_id}",
            lambda: ctx.db.query(sender.credentials, ctx.secrets, plan.account_id),
        )
        if creds is None:
            raise ProviderError(
                f"the {sender.integration} integration is not configured", retryable=False
            )
        sent = await _sent_before(ctx, sender, plan, creds, row) if row.outcome_unknown else None
        if sent is None:
            sent = await sender.send(plan, creds)
        status = sent.status if sent.status in STATUS_RANK else "queued"

        def settle(tx: Transaction) -> None:
            message = _message_row(tx.conn, row.target_id)
            if message is not None:
                move_status(
                    tx,
                    message,
                    status=status,
                    actor=DELIVERY_ACTOR,
                    provider_message_id=sent.provider_message_id,
                    recorded_as="message.sent",
                )

        return settle

    def on_dead(tx: Transaction, row: Claimed, exc: ProviderError) -> None:
        message = _message_row(tx.conn, row.target_id)
        if message is not None:
            # A code in the provider's answer is the provider's; else the HTTP status,
            # or the gateway's own failure.
            provider = _provider_of(tx.conn, message.channel_id) if exc.code else None
            code = failure_code(provider, exc.code) if provider else None
            move_status(
                tx,
                message,
                status="failed",
                actor=DELIVERY_ACTOR,
                error_code=code or (str(exc.status) if exc.status else "gateway"),
                error_message=str(exc),
                provider_error_code=exc.code if provider else None,
            )
            if provider and code == OPTED_OUT:
                # The provider knows the contact texted STOP: so does the gateway now.
                _opted_out_by_provider(tx, message, f"{provider} {exc.code}")

    def on_replay(tx: Transaction, row: Revived) -> None:
        requeue_failed(tx, row.target_id, actor=Actor(row.actor_name, row.actor_id))

    return Handler(run=run, policy=ctx.policy("sends"), on_dead=on_dead, on_replay=on_replay)


def _event_plan(
    conn: Connection, secrets: SecretBox, row: Claimed
) -> tuple[EndpointRow, EventRow, str]:
    endpoint = conn.execute(select(ENDPOINTS).where(ENDPOINTS.c.id == row.target_id)).one_or_none()
    if endpoint is None:
        raise Dropped("the endpoint was deleted")
    event = conn.execute(
        select(EVENT_ROWS).where(EVENT_ROWS.c.id == row.payload["event_id"])
    ).one_or_none()
    if event is None:
        raise Dropped("the event no longer exists")
    return endpoint, event, secrets.decrypt(endpoint.secret)


def event_body(event: EventRow, data: dict[str, Any] | None = None) -> str:
    """The Standard Webhooks payload of an event: type, timestamp, data (+ where it sits);
    ``data`` instead of the stored details (with its media links signed)."""
    occurred = event.occurred_at
    return orjson.dumps(
        {
            "type": event.type,
            "timestamp": occurred.isoformat() if occurred.tzinfo else occurred.isoformat() + "Z",
            "account_id": event.account_id,
            "cursor": str(event.seq),
            "data": event.details if data is None else data,
        }
    ).decode()


def event_handler(ctx: Context) -> Handler:
    """Each event to each enabled endpoint; 410 disables the endpoint."""

    async def run(row: Claimed) -> Settle | None:
        endpoint, event, secret = await ctx.db.query(_event_plan, ctx.secrets, row)
        if endpoint.status != "enabled":
            raise ProviderError("the endpoint is disabled", retryable=False)
        await deliver_event(
            ctx.providers.endpoints,
            url=endpoint.url,
            secret=secret,
            message_id=event.id,
            body=event_body(
                event,
                with_links(
                    event.type,
                    event.account_id,
                    event.details,
                    secrets=ctx.secrets,
                    public_url=ctx.settings.public_url,
                    seconds=ctx.settings.media_link_seconds,
                ),
            ),
            allow_private=ctx.settings.allow_private_endpoints,
        )
        return None

    def on_dead(tx: Transaction, row: Claimed, exc: ProviderError) -> None:
        if isinstance(exc, EndpointGone):
            reason = "the endpoint answered 410 Gone"
            tx.conn.execute(
                update(ENDPOINTS)
                .where(ENDPOINTS.c.id == row.target_id)
                .values(status="disabled", disabled_reason=reason, updated_at=utcnow())
            )
            outbox.bury_target(
                tx.conn,
                kind=EVENT_DELIVERY,
                target_id=row.target_id,
                error="endpoint disabled",
                keep=row.pk,
            )

    return Handler(run=run, policy=ctx.policy("events"), on_dead=on_dead)


def clear_sms_url_handler(ctx: Context) -> Handler:
    """Clear a deleted channel's URL on its Twilio number, if it is still ours."""

    async def run(row: Claimed) -> Settle | None:
        creds = await ctx.db.query(twilio_credentials, ctx.secrets, row.account_id)
        if creds is None:
            raise Dropped("the Twilio integration is gone")
        numbers = await ctx.providers.twilio.list_numbers(creds)
        for number in numbers:
            if number.sid == row.payload["number_sid"] and number.sms_url == row.payload["url"]:
                await ctx.providers.twilio.set_sms_url(creds, number.sid, "")
        return None

    return Handler(run=run, policy=ctx.policy("upkeep"))


def handlers(
    db: Database, secrets: SecretBox, providers: Providers, settings: Settings
) -> dict[str, Handler]:
    """Every kind of outbox row messaging writes, and its handler."""
    ctx = Context(db, secrets, providers, settings)
    return {
        SEND: send_handler(ctx),
        EVENT_DELIVERY: event_handler(ctx),
        CLEAR_SMS_URL: clear_sms_url_handler(ctx),
    }
