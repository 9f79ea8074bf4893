"""Chat: what an inbound message, a status update and an agent's reply change.

Each is one ``Database.transact`` unit: the dedup receipts, the contact, the
conversation, the message, the event (which fans out to the account's endpoints) and,
for a reply, the outbox row that sends it, all commit together or not at all. The
receipts are inserted first, under the unique key, so a retried webhook stops before
it changes anything, also when two copies arrive at once. These units take no account
lock (decision 0011): a race for a new contact or conversation is settled by their
unique keys (``ON CONFLICT DO NOTHING``, then the winner's row is used).
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert

from gateway.chat import window
from gateway.chat.models import (
    INBOUND,
    OPEN,
    OUTBOUND,
    STATUS_RANK,
    InboundMessage,
    Receipt,
    StatusUpdate,
)
from gateway.chat.opt_out import Change
from gateway.events.service import Actor, new_event, record_event
from gateway.web.errors import NotFound
from storage.engine import Database
from storage.one_statement import MOMENT, enqueued, event_ctes, event_params
from storage.prepared import Prepared
from storage.reads import Plan, Read, one_or_none
from storage.rows import MessageRow
from storage.tables import (
    CHANNELS,
    CONTACTS,
    CONVERSATIONS,
    MESSAGES,
    WEBHOOK_RECEIPTS,
    utcnow,
)
from storage.transaction import NewEvent, Transaction
from storage.upsert import insert_if_absent

SEND = "message.send"
# How long a webhook is remembered: CM.com retries for up to a month and has no message
# id, so its content hashes are kept 35 days; Twilio retries within seconds, and its
# messages are unique by MessageSid anyway.
CONTENT_HASH_DAYS = 35
TOKEN_DAYS = 2
CHAT_CATEGORY = "Messaging"


# A change of the chat model in the account's history and feed.
_event = functools.partial(record_event, category=CHAT_CATEGORY)


# Statements of the inbound path, built once: building a statement costs more than
# running it (measured: 74 µs built per call against 20 µs prebuilt, on SQLite).
_CONTACT_AND_OPEN_CONVERSATION = Prepared(
    select(
        CONTACTS.c.id,
        CONTACTS.c.name,
        CONVERSATIONS.c.id.label("conversation_id"),
    )
    .select_from(
        CONTACTS.outerjoin(
            CONVERSATIONS,
            (CONVERSATIONS.c.contact_id == CONTACTS.c.id)
            # A literal, so that the partial unique index on open conversations serves it.
            & (CONVERSATIONS.c.status == literal_column("'open'")),
        )
    )
    .where(
        CONTACTS.c.channel_id == bindparam("channel_id"),
        CONTACTS.c.address == bindparam("address"),
    )
)
_RENAME_CONTACT = Prepared(
    update(CONTACTS).where(CONTACTS.c.id == bindparam("contact_id")).values(name=bindparam("name"))
)
_OPEN_CONVERSATION = select(CONVERSATIONS.c.id).where(
    CONVERSATIONS.c.contact_id == bindparam("contact_id"),
    CONVERSATIONS.c.status == literal_column("'open'"),
)
_TOUCH_CONVERSATION = Prepared(
    update(CONVERSATIONS)
    .where(CONVERSATIONS.c.id == bindparam("conversation_id"))
    .values(last_activity_at=bindparam("moment"))
)
_UPDATE_MESSAGE = update(MESSAGES).where(MESSAGES.c.pk == bindparam("message_pk"))
# Forward only, checked by the database: two updates racing cannot move a status back.
_ADVANCE_MESSAGE = update(MESSAGES).where(
    MESSAGES.c.pk == bindparam("message_pk"), MESSAGES.c.status_rank < bindparam("below")
)
_CHANNEL_IS_LIVE = select(CHANNELS.c.id).where(
    CHANNELS.c.id == bindparam("channel_id"), CHANNELS.c.deleted_at.is_(None)
)


def _first_sighting(tx: Transaction, channel_id: str, keys: list[str]) -> bool:
    """Remember every key; False if any was remembered before (the webhook is a retry).

    A key is remembered only while the channel is live: a webhook for a channel deleted
    since the receiver looked it up is refused here, inside the transaction (404).
    """
    moment = time.time()
    fresh = True
    for key in keys:
        inserted = insert_if_absent(
            tx.conn,
            WEBHOOK_RECEIPTS,
            {"channel_id": channel_id, "key": key[:128], "received_at": moment},
            only_if=_CHANNEL_IS_LIVE,
        )
        fresh = fresh and inserted
    if not fresh:
        _require_live(tx, channel_id)
    return fresh


def _require_live(tx: Transaction, channel_id: str) -> None:
    """404 for a channel deleted since the receiver looked it up (checked in the write)."""
    if tx.conn.execute(_CHANNEL_IS_LIVE, {"channel_id": channel_id}).first() is None:
        raise NotFound("No such channel: it was deleted.")


def _contact_and_conversation(
    tx: Transaction, message: InboundMessage
) -> tuple[dict[str, Any], str | None]:
    """The channel's contact for the sender (created or renamed as needed) and its open
    conversation's id, if any, in one query."""
    where = {"channel_id": message.channel_id, "address": message.contact_address}
    row = _CONTACT_AND_OPEN_CONVERSATION.run(tx.conn, where).fetchone()
    if row is None:
        contact = {
            "id": str(uuid.uuid4()),
            "account_id": message.account_id,
            "channel_id": message.channel_id,
            "address": message.contact_address,
            "name": message.contact_name,
            "created_at": utcnow(),
        }
        if insert_if_absent(tx.conn, CONTACTS, contact):
            return contact, None
        # A concurrent first message of the same sender created it: use that one.
        row = _CONTACT_AND_OPEN_CONVERSATION.run(tx.conn, where).fetchone()
    contact_id, name, conversation_id = row
    contact = {"id": contact_id, "address": message.contact_address, "name": name}
    if message.contact_name and message.contact_name != name:
        _RENAME_CONTACT.run(tx.conn, {"contact_id": contact_id, "name": message.contact_name})
        contact["name"] = message.contact_name
    return contact, conversation_id


def _open_conversation(
    tx: Transaction,
    message: InboundMessage,
    contact: dict[str, Any],
    actor: Actor,
    found: str | None,
    *,
    now: datetime,
) -> str:
    """The contact's open conversation, or a new one (with its event), opened ``now`` by
    the message stored at that moment."""
    if found is not None:
        return found
    closes = window.closes_at(message.channel_type, now)
    opened = new_conversation(
        tx,
        NewConversation(
            account_id=message.account_id,
            channel_id=message.channel_id,
            queue_id=message.queue_id,
            local_address=message.local_address,
            contact=contact,
        ),
        actor,
        now=now,
        details={"window_closes_at": closes.isoformat()} if closes is not None else {},
    )
    # None: a concurrent message of the same contact opened it; that one is used.
    return opened or open_conversation_of(tx.conn, contact["id"])


@dataclass(frozen=True)
class NewConversation:
    """A conversation about to be opened: where, with whom, from which local address."""

    account_id: str
    channel_id: str
    queue_id: str
    local_address: str
    contact: dict[str, Any]


def new_conversation(
    tx: Transaction,
    new: NewConversation,
    actor: Actor,
    *,
    now: datetime,
    details: dict[str, Any],
) -> str | None:
    """Open a conversation with its ``conversation.opened`` (``details`` added to the
    event's); None, and nothing written, when the contact has an open one already."""
    conversation_id = str(uuid.uuid4())
    opened = insert_if_absent(
        tx.conn,
        CONVERSATIONS,
        {
            "id": conversation_id,
            "account_id": new.account_id,
            "channel_id": new.channel_id,
            "contact_id": new.contact["id"],
            "queue_id": new.queue_id,
            "local_address": new.local_address,
            "status": OPEN,
            "opened_at": now,
            "last_activity_at": now,
            "closed_at": None,
        },
    )
    if not opened:
        return None
    _event(
        tx,
        account_id=new.account_id,
        actor=actor,
        action="Create",
        asset="Conversation",
        asset_id=conversation_id,
        type="conversation.opened",
        properties_changed=["status"],
        details={
            "conversation_id": conversation_id,
            "channel_id": new.channel_id,
            "queue_id": new.queue_id,
            "contact": _contact_data(new.contact),
            **details,
        },
    )
    return conversation_id


def open_conversation_of(conn: Connection, contact_id: str) -> str:
    """The contact's open conversation (one exists)."""
    return str(conn.execute(_OPEN_CONVERSATION, {"contact_id": contact_id}).scalar_one())


def _contact_data(contact: dict[str, Any]) -> dict[str, Any]:
    return {"id": contact["id"], "address": contact["address"], "name": contact["name"]}


class AlreadyStored(Exception):
    """The message is there already; the unit is rolled back and the webhook a duplicate."""


async def receive_message(db: Database, message: InboundMessage, *, actor: Actor) -> Receipt:
    """Store a customer's message in its conversation (opening one if none is open).

    One transaction, in steps: a retry the dedup keys recognise stops at once; the contact
    and its open conversation are found or made; the message is inserted (unique by the
    provider's id, and only while the channel is live); the conversation is touched, and
    ``message.received`` recorded.
    """

    def work(tx: Transaction) -> Receipt:
        if not _first_sighting(tx, message.channel_id, message.dedup_keys):
            return Receipt("duplicate")
        contact, found = _contact_and_conversation(tx, message)
        now = utcnow()
        if message.opt_change is not None:
            set_opt_out(
                tx,
                account_id=message.account_id,
                contact={**contact, "channel_id": message.channel_id},
                change=message.opt_change,
                actor=actor,
                now=now,
                reason="keyword",
            )
        conversation_id = _open_conversation(tx, message, contact, actor, found, now=now)
        media = [asdict(item) for item in message.media]
        message_id = _insert_inbound(tx, message, conversation_id, media, now)
        if found is not None:
            _TOUCH_CONVERSATION.run(tx.conn, {"conversation_id": found, "moment": now})
        tx.record_event(
            _received(
                message,
                message_id=message_id,
                conversation_id=conversation_id,
                contact=contact,
                media=media,
                actor=actor,
                stored_at=now,
            )
        )
        return Receipt("accepted", message_id, conversation_id)

    if db.writes_in_one_statement and not message.dedup_keys and message.opt_change is None:
        receipt = await _received_in_one_statement(db, message, actor)
        if receipt is not None:
            return receipt
    try:
        return await db.transact(work)
    except AlreadyStored:
        return Receipt("duplicate")


def _found(where: dict[str, Any]) -> Plan[Any]:
    return one_or_none((yield Read(_CONTACT_AND_OPEN_CONVERSATION, where)))


@functools.cache
def _receive_postgres(columns: tuple[str, ...]) -> Prepared:
    """PostgreSQL: a message into its contact's open conversation in one statement, its
    own transaction (``storage.one_statement``): the message (once per provider id, only
    while the channel is live and the conversation still open under the contact's name as
    read), the conversation touched and ``message.received`` with its deliveries, each only
    if the message was stored. Returns the message's id, or None if nothing was written."""
    row = [bindparam(name, type_=MESSAGES.c[name].type) for name in columns]
    still_open = exists(
        select(CONVERSATIONS.c.id)
        .join(CONTACTS, CONTACTS.c.id == CONVERSATIONS.c.contact_id)
        .where(
            CONVERSATIONS.c.id == bindparam("conversation_id"),
            CONVERSATIONS.c.status == literal_column("'open'"),
            CONTACTS.c.name.is_not_distinct_from(bindparam("contact_name")),
        )
    )
    new_message = (
        postgres_insert(MESSAGES)
        .from_select(list(columns), select(*row).where(_CHANNEL_IS_LIVE.exists(), still_open))
        .on_conflict_do_nothing()
        .returning(MESSAGES.c.id)
        .cte("new_message")
    )
    stored = exists(select(new_message.c.id))
    touched = (
        update(CONVERSATIONS)
        .where(CONVERSATIONS.c.id == bindparam("conversation_id"), stored)
        .values(last_activity_at=bindparam("updated_at"))
        .cte("touched")
    )
    event = event_ctes(stored)
    return Prepared(
        select(
            select(new_message.c.id).scalar_subquery().label("message_id"), enqueued(event[-1])
        ).add_cte(touched, *event)
    )


async def _received_in_one_statement(
    db: Database, message: InboundMessage, actor: Actor
) -> Receipt | None:
    """PostgreSQL, a message of a known contact whose conversation is open (nearly every
    one): a read and one statement, each one round trip on the event loop, instead of a
    transaction of six on a thread. None when that is not the case, or when the statement
    wrote nothing (a retry, a channel deleted, a conversation closed or a contact renamed
    meanwhile): ``receive_message``'s transaction then does what each case needs."""
    where = {"channel_id": message.channel_id, "address": message.contact_address}
    found = await db.read(_found, where)
    if found is None or found.conversation_id is None:
        return None
    if message.contact_name and message.contact_name != found.name:
        return None
    return await _write_received(db, message, actor, found)


async def _write_received(
    db: Database, message: InboundMessage, actor: Actor, found: Any
) -> Receipt | None:
    """The statement of ``_received_in_one_statement``, for the contact and open
    conversation ``found`` read before it."""
    contact = {"id": found.id, "address": message.contact_address, "name": found.name}
    media = [asdict(item) for item in message.media]
    message_id, now = str(uuid.uuid4()), utcnow()
    event = _received(
        message,
        message_id=message_id,
        conversation_id=found.conversation_id,
        contact=contact,
        media=media,
        actor=actor,
        stored_at=now,
    )
    stored = _inbound_row(message, message_id, found.conversation_id, media, now)
    [written] = await db.write_statement(
        _receive_postgres(tuple(stored)),
        {**stored, "contact_name": found.name, **event_params(event), MOMENT: time.time()},
    )
    if written.message_id is None:
        return None
    return Receipt("accepted", message_id, found.conversation_id)


def _insert_inbound(
    tx: Transaction,
    message: InboundMessage,
    conversation_id: str,
    media: list[dict[str, Any]],
    now: datetime,
) -> str:
    """The message's row, stored at ``now``: its id. A provider's message id is unique per
    channel, so that key alone makes a retry a duplicate (``AlreadyStored``) and such
    messages need no receipt; the channel must still be live (404 otherwise)."""
    message_id = str(uuid.uuid4())
    inserted = insert_if_absent(
        tx.conn,
        MESSAGES,
        _inbound_row(message, message_id, conversation_id, media, now),
        only_if=_CHANNEL_IS_LIVE,
    )
    if not inserted:
        _require_live(tx, message.channel_id)
        # A retry of a stored message (its id, or a receipt forgotten since).
        raise AlreadyStored
    return message_id


def _inbound_row(
    message: InboundMessage,
    message_id: str,
    conversation_id: str,
    media: list[dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """The stored row of a customer's message."""
    return {
        "id": message_id,
        "account_id": message.account_id,
        "conversation_id": conversation_id,
        "channel_id": message.channel_id,
        "direction": INBOUND,
        "text": message.text,
        "media": media,
        "provider_message_id": message.provider_message_id,
        "status": "received",
        "status_rank": STATUS_RANK["received"],
        "error_code": None,
        "error_message": None,
        "author": None,
        "created_at": now,
        "updated_at": now,
    }


def _received(
    message: InboundMessage,
    *,
    message_id: str,
    conversation_id: str,
    contact: dict[str, Any],
    media: list[dict[str, Any]],
    actor: Actor,
    stored_at: datetime,
) -> NewEvent:
    """The ``message.received`` event: the message with its contact and queue, and on
    WhatsApp and Messenger when the customer service window it opens again closes."""
    closes = window.closes_at(message.channel_type, stored_at)
    return new_event(
        category=CHAT_CATEGORY,
        account_id=message.account_id,
        actor=actor,
        action="Create",
        asset="Message",
        asset_id=message_id,
        type="message.received",
        properties_changed=["text", "media"] if media else ["text"],
        details={
            "message_id": message_id,
            "conversation_id": conversation_id,
            "channel_id": message.channel_id,
            "queue_id": message.queue_id,
            "direction": INBOUND,
            "contact": _contact_data(contact),
            "text": message.text,
            "media": media,
            "provider_message_id": message.provider_message_id,
            "received_at": message.received_at.isoformat(),
            **({"window_closes_at": closes.isoformat()} if closes is not None else {}),
            **({"extras": message.extras} if message.extras else {}),
        },
    )


def _find_sent(conn: Connection, update_: StatusUpdate) -> MessageRow | None:
    query = select(MESSAGES).where(
        MESSAGES.c.channel_id == update_.channel_id, MESSAGES.c.direction == OUTBOUND
    )
    if update_.message_id is not None:
        row = conn.execute(query.where(MESSAGES.c.id == update_.message_id)).one_or_none()
        if row is not None:
            return row
    if update_.provider_message_id is not None:
        return conn.execute(
            query.where(MESSAGES.c.provider_message_id == update_.provider_message_id)
        ).one_or_none()
    return None


def move_status(
    tx: Transaction,
    row: MessageRow,
    *,
    status: str,
    actor: Actor,
    error_code: str | None = None,
    error_message: str | None = None,
    provider_message_id: str | None = None,
    recorded_as: str = "message.status_changed",
    provider_error_code: str | None = None,
) -> bool:
    """Move a message's status forward (never back); records the event. False if stale.

    A failure's ``error_code`` names the case in the gateway's words where the receiver
    knew it (``window_closed``), ``provider_error_code`` is the provider's own."""
    rank = STATUS_RANK.get(status)
    if rank is None or rank <= row.status_rank:
        if provider_message_id and not row.provider_message_id:
            tx.conn.execute(
                _UPDATE_MESSAGE,
                {"message_pk": row.pk, "provider_message_id": provider_message_id},
            )
        return False
    values: dict[str, Any] = {"status": status, "status_rank": rank, "updated_at": utcnow()}
    if provider_message_id and not row.provider_message_id:
        values["provider_message_id"] = provider_message_id
    if error_code is not None or error_message is not None:
        values["error_code"] = error_code
        values["error_message"] = error_message[:1000] if error_message else None
        values["provider_error_code"] = provider_error_code
    advanced = tx.conn.execute(_ADVANCE_MESSAGE, {"message_pk": row.pk, "below": rank, **values})
    if advanced.rowcount != 1:
        # A concurrent update moved it as far or further meanwhile: this one is stale.
        return False
    _status_event(tx, row, {**values, "status": status}, actor=actor, recorded_as=recorded_as)
    return True


def _status_event(
    tx: Transaction,
    row: MessageRow,
    changed: dict[str, Any],
    *,
    actor: Actor,
    recorded_as: str,
) -> None:
    """The event of a message's status move: what changed, and the message as it is now."""
    _event(
        tx,
        account_id=row.account_id,
        actor=actor,
        action="Edit",
        asset="Message",
        asset_id=row.id,
        type=recorded_as,
        properties_changed=sorted(k for k in changed if k not in {"status_rank", "updated_at"}),
        details={
            "message_id": row.id,
            "conversation_id": row.conversation_id,
            "channel_id": row.channel_id,
            "direction": row.direction,
            "status": changed["status"],
            "previous_status": row.status,
            "provider_message_id": changed.get("provider_message_id", row.provider_message_id),
            "error_code": changed.get("error_code", row.error_code),
            "error_message": changed.get("error_message", row.error_message),
            "provider_error_code": changed.get("provider_error_code", row.provider_error_code),
        },
    )


async def apply_status(db: Database, update_: StatusUpdate, *, actor: Actor) -> Receipt:
    """Apply a delivery status if it moves the message forward."""

    def work(tx: Transaction) -> Receipt:
        if not _first_sighting(tx, update_.channel_id, update_.dedup_keys):
            return Receipt("duplicate")
        row = _find_sent(tx.conn, update_)
        if row is None:
            return Receipt("unknown")
        moved = move_status(
            tx,
            row,
            status=update_.status,
            actor=actor,
            error_code=update_.error_code,
            error_message=update_.error_message,
            provider_message_id=update_.provider_message_id,
            provider_error_code=update_.provider_error_code,
        )
        return Receipt("accepted" if moved else "stale", row.id, row.conversation_id)

    return await db.transact(work)


def set_opt_out(
    tx: Transaction,
    *,
    account_id: str,
    contact: dict[str, Any],
    change: Change,
    actor: Actor,
    now: datetime,
    reason: str,
) -> bool:
    """Record that ``contact`` opted out of its channel (``change`` "out") or back in, and
    tell CloudLink (``contact.opted_out`` / ``contact.opted_in``); nothing when it is so
    already. ``reason``: "keyword" (their message), or the provider's code refusing a send."""
    out = change == "out"
    moved = tx.conn.execute(
        update(CONTACTS)
        .where(
            CONTACTS.c.id == contact["id"],
            CONTACTS.c.opted_out_at.is_(None) if out else CONTACTS.c.opted_out_at.is_not(None),
        )
        .values(opted_out_at=now if out else None)
    )
    if moved.rowcount != 1:
        return False
    _event(
        tx,
        account_id=account_id,
        actor=actor,
        action="Edit",
        asset="Contact",
        asset_id=contact["id"],
        type="contact.opted_out" if out else "contact.opted_in",
        properties_changed=["opted_out_at"],
        details={
            "contact": _contact_data(contact),
            "channel_id": contact["channel_id"],
            "opted_out": out,
            "reason": reason,
            "at": now.isoformat(),
        },
    )
    return True


def forget_old_receipts(tx: Transaction) -> None:
    """Delete webhook receipts past their window (run now and then by the worker)."""
    moment = time.time()
    hashes = WEBHOOK_RECEIPTS.c.key.startswith("hash:")
    tx.conn.execute(
        delete(WEBHOOK_RECEIPTS).where(
            (hashes & (WEBHOOK_RECEIPTS.c.received_at < moment - CONTENT_HASH_DAYS * 86400))
            | (~hashes & (WEBHOOK_RECEIPTS.c.received_at < moment - TOKEN_DAYS * 86400))
        )
    )


def requeue_failed(tx: Transaction, message_id: str, *, actor: Actor) -> bool:
    """Move a failed reply back to pending, for its send to be tried again (an operator
    replayed its dead letter), and record the move as a status change by ``actor``.

    The one way a status moves back: providers' reports only move it forward
    (``move_status``), but a replay is an operator's decision that the failure was not
    final. False, and nothing written, unless the message is failed.
    """
    row = tx.conn.execute(select(MESSAGES).where(MESSAGES.c.id == message_id)).one_or_none()
    if row is None or row.status != "failed":
        return False
    moved = tx.conn.execute(
        update(MESSAGES)
        .where(MESSAGES.c.pk == row.pk, MESSAGES.c.status == "failed")
        .values(
            status="pending",
            status_rank=STATUS_RANK["pending"],
            error_code=None,
            error_message=None,
            provider_error_code=None,
            updated_at=utcnow(),
        )
    )
    if moved.rowcount != 1:
        return False
    changed = {
        "status": "pending",
        "error_code": None,
        "error_message": None,
        "provider_error_code": None,
    }
    _status_event(tx, row, changed, actor=actor, recorded_as="message.status_changed")
    return True
