"""Channels: added against the provider (Twilio numbers are checked and set), kept in the
database, deleted with a confirmation.

Provider calls happen before the write that records the channel, and never inside a
transaction: a refused number or an unreachable Twilio leaves nothing behind. Clearing
a deleted Twilio SMS channel's webhook goes through the outbox, so it is retried until
Twilio takes it, even across restarts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.accounts.providers import cm_product_token, twilio_credentials
from gateway.accounts.service import admin_event, require_account
from gateway.channels.models import (
    CONFIRMATION,
    E164,
    ChannelCreate,
    ChannelOut,
    TemplatesRegistered,
    TemplatesSet,
    webhook_url,
)
from gateway.clients.http import ProviderError
from gateway.clients.twilio import PhoneNumber, TwilioApi, TwilioCredentials
from gateway.events.service import Actor
from gateway.security import SecretBox, new_token, token_digest
from gateway.web.errors import (
    Conflict,
    InvalidValue,
    NotFound,
    Unprocessable,
    UpstreamUnavailable,
    shown,
)
from storage.engine import Database
from storage.rows import ChannelRow
from storage.tables import CHANNELS, utcnow
from storage.transaction import Transaction

CLEAR_SMS_URL = "twilio.clear_sms_url"
log = structlog.get_logger("gateway.channels")


@dataclass(frozen=True)
class ChannelContext:
    """What the webhook receivers and the sender need of a live channel."""

    id: str
    account_id: str
    provider: str
    type: str
    number: str | None
    pages: list[str]
    queue_id: str
    secret_sha256: str | None


def e164(value: str) -> str:
    """``value`` as E.164 (``+`` and 7 to 15 digits), or 400 saying what is expected."""
    cleaned = value.strip()
    if not E164.fullmatch(cleaned):
        raise InvalidValue(f"number {shown(value)!r} is not in E.164 form, e.g. +14155550100.")
    return cleaned


def _check_shape(body: ChannelCreate) -> tuple[str | None, list[str]]:
    if body.type == "messenger":
        if body.number is not None:
            raise InvalidValue("A Messenger channel is bound to pages (--page), not a number.")
        pages = list(body.pages)
        if not pages:
            raise InvalidValue(
                "A Messenger channel needs one or more Facebook page ids (--page PAGE)."
            )
        if len(set(pages)) != len(pages):
            raise InvalidValue("A page is listed twice.")
        return None, pages
    if body.pages:
        raise InvalidValue(f"A {body.type} channel is bound to a number (--number), not pages.")
    if body.number is None:
        raise InvalidValue(f"A {body.type} channel needs the number it uses (--number E164).")
    return e164(body.number), []


def context_of(row: ChannelRow) -> ChannelContext:
    """The receivers' view of a channel row."""
    return ChannelContext(
        id=row.id,
        account_id=row.account_id,
        provider=row.provider,
        type=row.type,
        number=row.number,
        pages=list(row.pages),
        queue_id=row.queue_id,
        secret_sha256=row.secret_sha256,
    )


def live_channel(conn: Connection, channel_id: str) -> ChannelContext | None:
    """A channel that has not been deleted, by id."""
    row = conn.execute(
        select(CHANNELS).where(CHANNELS.c.id == channel_id, CHANNELS.c.deleted_at.is_(None))
    ).one_or_none()
    return None if row is None else context_of(row)


def account_channel(
    conn: Connection, account_id: str, channel_id: str, *, deleted: type[Exception] = NotFound
) -> ChannelRow:
    """The account's channel (404 for an unknown account or channel, or another account's);
    a deleted one raises ``deleted`` (404, or 409 where saying so helps more)."""
    require_account(conn, account_id)
    row: ChannelRow | None = conn.execute(
        select(CHANNELS).where(CHANNELS.c.id == channel_id, CHANNELS.c.account_id == account_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"No channel {shown(channel_id)!r} in this account.")
    if row.deleted_at is not None:
        raise (
            NotFound(f"No channel {shown(channel_id)!r} in this account.")
            if deleted is NotFound
            else deleted("The channel was deleted.")
        )
    return row


def channel_out(row: ChannelRow, secrets: SecretBox, public_url: str) -> ChannelOut:
    """The API shape of a channel row (CM.com's URL secret decrypted to show the URL)."""
    secret = secrets.decrypt(row.secret) if row.secret else None
    automatic = row.provider == "twilio" and row.type == "sms" and row.provider_ref
    return ChannelOut(
        id=row.id,
        provider=row.provider,
        type=row.type,
        number=row.number,
        pages=list(row.pages),
        queue_id=row.queue_id,
        webhook_url=webhook_url(public_url, row.provider, row.id, secret),
        webhook_setup="automatic" if automatic else "manual",
        created_at=row.created_at,
    )


def _live_rows(conn: Connection, account_id: str) -> list[Any]:
    return list(
        conn.execute(
            select(CHANNELS)
            .where(CHANNELS.c.account_id == account_id, CHANNELS.c.deleted_at.is_(None))
            .order_by(CHANNELS.c.created_at, CHANNELS.c.id)
        ).all()
    )


async def list_channels(
    db: Database, *, secrets: SecretBox, account_id: str, public_url: str
) -> list[ChannelOut]:
    """The live channels of an account, oldest first."""

    def read(conn: Connection) -> list[ChannelOut]:
        require_account(conn, account_id)
        return [channel_out(row, secrets, public_url) for row in _live_rows(conn, account_id)]

    return await db.query(read)


async def _owned_twilio_number(
    twilio: TwilioApi, creds: TwilioCredentials, number: str
) -> PhoneNumber:
    try:
        found = await twilio.list_numbers(creds, phone_number=number)
    except ProviderError as exc:
        raise provider_failure(exc, "listing the account's numbers") from exc
    for candidate in found:
        if candidate.phone_number == number:
            return candidate
    try:
        owned = [n.phone_number for n in await twilio.list_numbers(creds)]
    except ProviderError:
        owned = []
    listing = ", ".join(owned[:10]) + (" ..." if len(owned) > 10 else "")
    raise Unprocessable(
        f"The Twilio account does not own {number}; its numbers: {listing or 'none'}."
    )


async def twilio_numbers(
    db: Database, *, secrets: SecretBox, twilio: TwilioApi, account_id: str
) -> list[str]:
    """The numbers of the account's Twilio account, for an admin to pick a channel's from;
    409 until the Twilio integration is set up."""

    def read(conn: Connection) -> TwilioCredentials | None:
        require_account(conn, account_id)
        return twilio_credentials(conn, secrets, account_id)

    creds = await db.query(read)
    if creds is None:
        raise Conflict("Set up the Twilio integration first (Account SID and Auth Token).")
    try:
        numbers = await twilio.list_numbers(creds)
    except ProviderError as exc:
        raise provider_failure(exc, "listing the account's numbers") from exc
    return sorted(number.phone_number for number in numbers)


def provider_failure(exc: ProviderError, doing: str, integration: str = "Twilio") -> Exception:
    """A provider's failure while an operator waits: 503 when trying again may help, else
    409 naming the integration to check."""
    if exc.retryable:
        return UpstreamUnavailable(f"{integration} could not be reached while {doing} ({exc}).")
    return Conflict(f"{integration} refused {doing}: {exc}. Check the {integration} integration.")


async def add_channel(
    db: Database,
    *,
    secrets: SecretBox,
    twilio: TwilioApi,
    account_id: str,
    body: ChannelCreate,
    actor: Actor,
    public_url: str,
) -> ChannelOut:
    """Add a channel; Twilio numbers must be the account's, Twilio SMS gets its URL set.

    The steps: check the shape and that the account has the provider's integration, then
    what the provider must know before the row exists (the Twilio number is owned; an
    SMS number's URL is set to the channel's), then the row and its event. A failed commit
    gives the number its URL back.
    """
    number, pages = _check_shape(body)
    channel_id = str(uuid.uuid4())
    creds = await db.query(_credentials_for, secrets, account_id, body, number)
    provider_ref = None
    if isinstance(creds, TwilioCredentials) and number is not None:
        provider_ref = await _point_twilio_number(
            twilio, creds, number, body.type, webhook_url(public_url, "twilio", channel_id)
        )
    new = _NewChannel(
        id=channel_id,
        account_id=account_id,
        body=body,
        number=number,
        pages=pages,
        provider_ref=provider_ref,
        cm_secret=new_token() if body.provider == "cm" else None,
    )
    try:
        return await db.transact(lambda tx: _insert_channel(tx, secrets, new, actor, public_url))
    except Exception:
        if isinstance(creds, TwilioCredentials) and provider_ref is not None:
            await _restore_sms_url(
                db,
                twilio=twilio,
                creds=creds,
                account_id=account_id,
                number_sid=provider_ref,
                public_url=public_url,
            )
        raise


def _credentials_for(
    conn: Connection, secrets: SecretBox, account_id: str, body: ChannelCreate, number: str | None
) -> TwilioCredentials | str:
    """The provider integration's credentials (Twilio's, or CM.com's product token), once
    the account exists and no live channel of the same kind uses the number."""
    require_account(conn, account_id)
    if number is not None and _clashing(conn, account_id, body.provider, body.type, number):
        raise Conflict(f"A {body.type} channel already uses {number}.")
    if body.provider == "twilio":
        creds: TwilioCredentials | str | None = twilio_credentials(conn, secrets, account_id)
    else:
        creds = cm_product_token(conn, secrets, account_id)
    if creds is None:
        command = "set-twilio" if body.provider == "twilio" else "set-cm"
        raise Conflict(
            f"Configure the {body.provider} integration of this account first "
            f"(`cloudlink-gateway integration {command} ...`)."
        )
    return creds


async def _point_twilio_number(
    twilio: TwilioApi, creds: TwilioCredentials, number: str, kind: str, url: str
) -> str | None:
    """Check that the account owns the number; an SMS number outside a Messaging Service
    gets the channel's URL, and its sid is returned (to clear the URL later)."""
    owned = await _owned_twilio_number(twilio, creds, number)
    if kind != "sms" or owned.messaging_service_sid is not None:
        return None
    try:
        await twilio.set_sms_url(creds, owned.sid, url)
    except ProviderError as exc:
        raise provider_failure(exc, "setting the number's SMS URL") from exc
    return owned.sid


@dataclass(frozen=True)
class _NewChannel:
    """A channel about to be stored, with what the provider steps found."""

    id: str
    account_id: str
    body: ChannelCreate
    number: str | None
    pages: list[str]
    provider_ref: str | None
    cm_secret: str | None


def _insert_channel(
    tx: Transaction, secrets: SecretBox, new: _NewChannel, actor: Actor, public_url: str
) -> ChannelOut:
    """The channel's row (unique per live number and kind) and its ``channel.created``."""
    tx.lock_account(new.account_id)
    body = new.body
    try:
        with tx.conn.begin_nested():
            tx.conn.execute(
                insert(CHANNELS).values(
                    id=new.id,
                    account_id=new.account_id,
                    provider=body.provider,
                    type=body.type,
                    number=new.number,
                    pages=new.pages,
                    queue_id=body.queue_id,
                    secret_sha256=token_digest(new.cm_secret) if new.cm_secret else None,
                    secret=secrets.encrypt(new.cm_secret) if new.cm_secret else None,
                    provider_ref=new.provider_ref,
                    created_at=utcnow(),
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"A {body.type} channel already uses {new.number}.") from exc
    shown = {
        "provider": body.provider,
        "type": body.type,
        "number": new.number,
        "pages": new.pages,
        "queue_id": body.queue_id,
    }
    admin_event(
        tx,
        account_id=new.account_id,
        actor=actor,
        action="Create",
        asset="Channel",
        asset_id=new.id,
        type="channel.created",
        properties_changed=list(shown),
        details={"id": new.id, **shown},
    )
    row = tx.conn.execute(select(CHANNELS).where(CHANNELS.c.id == new.id)).one()
    return channel_out(row, secrets, public_url)


async def _restore_sms_url(
    db: Database,
    *,
    twilio: TwilioApi,
    creds: TwilioCredentials,
    account_id: str,
    number_sid: str,
    public_url: str,
) -> None:
    """Point a number back at its live channel (or at nothing) after a failed add.

    The URL was set before the channel was stored; when storing fails, the number must
    not be left pointing at a channel that does not exist.
    """

    def live_sms_channel(conn: Connection) -> str | None:
        found = conn.execute(
            select(CHANNELS.c.id).where(
                CHANNELS.c.account_id == account_id,
                CHANNELS.c.provider_ref == number_sid,
                CHANNELS.c.deleted_at.is_(None),
            )
        ).first()
        return None if found is None else str(found.id)

    try:
        live = await db.query(live_sms_channel)
        url = webhook_url(public_url, "twilio", live) if live else ""
        await twilio.set_sms_url(creds, number_sid, url)
    except Exception:  # the add failed already; say so in the log, answer its error
        log.warning("sms_url_not_restored", number_sid=number_sid, exc_info=True)


def _clashing(conn: Connection, account_id: str, provider: str, kind: str, number: str) -> bool:
    return (
        conn.execute(
            select(CHANNELS.c.id).where(
                CHANNELS.c.account_id == account_id,
                CHANNELS.c.provider == provider,
                CHANNELS.c.type == kind,
                CHANNELS.c.number == number,
                CHANNELS.c.deleted_at.is_(None),
            )
        ).first()
        is not None
    )


async def delete_channels(
    db: Database,
    *,
    account_id: str,
    ids: list[str],
    confirm: str,
    actor: Actor,
    public_url: str,
) -> list[str]:
    """Delete channels (all or none); ``confirm`` must be exactly "confirm", as in the console.

    A deleted channel's webhook URL answers 404 at once; its conversations stay readable.
    A Twilio SMS number whose URL the gateway set is cleared through the outbox.
    """
    if confirm != CONFIRMATION:
        raise InvalidValue(f'Deleting channels needs the confirmation value "{CONFIRMATION}".')
    wanted = list(dict.fromkeys(ids))

    def work(tx: Transaction) -> list[str]:
        tx.lock_account(account_id)
        require_account(tx.conn, account_id)
        rows = {row.id: row for row in _live_rows(tx.conn, account_id)}
        missing = [channel_id for channel_id in wanted if channel_id not in rows]
        if missing:
            raise NotFound(
                f"No live channel {', '.join(shown(m) for m in missing)} in this account; "
                "nothing was deleted."
            )
        now = utcnow()
        for channel_id in wanted:
            row = rows[channel_id]
            tx.conn.execute(
                update(CHANNELS).where(CHANNELS.c.id == channel_id).values(deleted_at=now)
            )
            if row.provider_ref:
                tx.enqueue(
                    account_id=account_id,
                    kind=CLEAR_SMS_URL,
                    target_id=channel_id,
                    payload={
                        "number_sid": row.provider_ref,
                        "url": webhook_url(public_url, "twilio", channel_id),
                    },
                )
            admin_event(
                tx,
                account_id=account_id,
                actor=actor,
                action="Delete",
                asset="Channel",
                asset_id=channel_id,
                type="channel.deleted",
                properties_changed=["deleted_at"],
                details={"id": channel_id, "provider": row.provider, "type": row.type},
            )
        return wanted

    return await db.transact(work)


async def set_templates(
    db: Database, *, account_id: str, channel_id: str, body: TemplatesSet, actor: Actor
) -> TemplatesRegistered:
    """Register a CM.com WhatsApp channel's approved templates (replacing the earlier set):
    CM.com's messaging API lists none, so the operator copies them from its Channels
    portal. Twilio's are read from its Content API instead."""
    seen: set[tuple[str, str]] = set()
    for item in body.items:
        key = (item.name, item.language)
        if key in seen:
            raise Unprocessable(f"The template {item.name!r} in {item.language!r} is listed twice.")
        seen.add(key)
    stored = [item.model_dump(exclude_none=True) for item in body.items]

    def work(tx: Transaction) -> TemplatesRegistered:
        channel = account_channel(tx.conn, account_id, channel_id)
        if channel.provider != "cm" or channel.type != "whatsapp":
            raise Conflict(
                "Templates are registered on CM.com WhatsApp channels only; a Twilio "
                "channel's come from Twilio's Content API."
            )
        tx.conn.execute(
            update(CHANNELS).where(CHANNELS.c.id == channel_id).values(templates=stored)
        )
        admin_event(
            tx,
            account_id=account_id,
            actor=actor,
            action="Edit",
            asset="Channel",
            asset_id=channel_id,
            type="channel.templates_set",
            properties_changed=["templates"],
            details={
                "id": channel_id,
                "templates": [f"{t['name']}/{t['language']}" for t in stored],
            },
        )
        return TemplatesRegistered(channel_id=channel_id, items=body.items)

    return await db.transact(work)
