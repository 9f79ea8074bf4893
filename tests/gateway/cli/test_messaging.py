"""The messaging commands scripts rely on, run as a user runs them (a separate process)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select, update

from gateway.chat import outbound
from gateway.chat import service as chat
from gateway.chat.models import STATUS_RANK, InboundMessage
from gateway.chat.outbound import Outgoing
from gateway.events.service import OPERATOR_CLI
from storage.engine import Database, make_engine
from storage.tables import EVENTS, MESSAGES, OUTBOX
from storage.transaction import Transaction
from tests.fakes.loopback import serve_app
from tests.fakes.twilio import FakeTwilio
from tests.support.cli import cli, json_of
from tests.support.sync import run

SID = "AC" + "c1" * 16
CM_TOKEN = "cm-product-token-0123"
TOKEN = "cli-twilio-auth-token-01234567"
NUMBER = "+14155550111"


@pytest.fixture
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio()
    fake.add_account(SID, TOKEN)
    fake.add_number(SID, NUMBER)
    with serve_app(fake.app) as url:
        yield fake, url


@pytest.fixture
def env(tmp_path: Path, twilio: tuple[FakeTwilio, str]) -> dict[str, str]:
    values = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_PUBLIC_URL": "https://gateway.example.com",
        "GATEWAY_TWILIO_API_URL": twilio[1],
        "GATEWAY_TWILIO_CONTENT_URL": twilio[1],
        "GATEWAY_ALLOW_PRIVATE_ENDPOINTS": "true",
    }
    values.pop("GATEWAY_SECRET_KEYS", None)
    return values


def test_the_scripted_messaging_commands(env: dict[str, str], tmp_path: Path) -> None:
    """set-twilio, set-cm, channel add --json and endpoint add --json work on a fresh data
    directory with no key configured (the key file is created, owner-only)."""
    account: dict[str, Any] = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    result = cli(
        env,
        "integration",
        "set-twilio",
        account["id"],
        "--name",
        "Support",
        "--account-sid",
        SID,
        "--auth-token",
        TOKEN,
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    key = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    result = cli(
        env,
        "integration",
        "set-cm",
        account["id"],
        "--name",
        "CM",
        "--cm-account-id",
        "cm-42",
        "--product-token",
        "cm-product-token-0123",
    )
    assert result.returncode == 0, result.stderr
    channel = json_of(
        cli(
            env,
            "channel",
            "add",
            account["id"],
            "--provider",
            "twilio",
            "--type",
            "whatsapp",
            "--number",
            NUMBER,
            "--queue",
            "q-1",
            "--json",
        )
    )
    assert {"id", "webhook_url"} <= set(channel)
    assert channel["webhook_url"] == f"https://gateway.example.com/webhooks/twilio/{channel['id']}"
    messenger = json_of(
        cli(
            env,
            "channel",
            "add",
            account["id"],
            "--provider",
            "cm",
            "--type",
            "messenger",
            "--page",
            "p1",
            "--page",
            "p2",
            "--queue",
            "q-2",
            "--json",
        )
    )
    assert messenger["pages"] == ["p1", "p2"]
    assert messenger["webhook_url"].startswith(
        f"https://gateway.example.com/webhooks/cm/{messenger['id']}/"
    )
    endpoint = json_of(
        cli(env, "endpoint", "add", account["id"], "--url", "http://127.0.0.1:9/e", "--json")
    )
    assert {"id", "secret"} <= set(endpoint)
    assert endpoint["secret"].startswith("whsec_")
    listed = json_of(cli(env, "channel", "list", account["id"], "--json"))
    assert [c["id"] for c in listed] == [channel["id"], messenger["id"]]
    integrations = cli(env, "integration", "list", account["id"], "--json")
    assert TOKEN not in integrations.stdout
    assert json_of(cli(env, "deadletter", "list", account["id"], "--json")) == []
    assert json_of(cli(env, "conversation", "list", account["id"], "--json")) == []
    refused = cli(env, "channel", "delete", account["id"], channel["id"], "--confirm", "no")
    assert refused.returncode == 1
    assert "confirm" in refused.stderr
    deleted = cli(env, "channel", "delete", account["id"], channel["id"], "--confirm", "confirm")
    assert deleted.returncode == 0, deleted.stderr


def test_bad_options_name_the_option(env: dict[str, str]) -> None:
    """A malformed SID is refused before anything is called, naming --account-sid."""
    account = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    result = cli(
        env,
        "integration",
        "set-twilio",
        account["id"],
        "--name",
        "x",
        "--account-sid",
        "nope",
        "--auth-token",
        TOKEN,
    )
    assert result.returncode == 1
    assert "--account-sid" in result.stderr


def test_serving_postgresql_without_a_key_is_a_clear_error(env: dict[str, str]) -> None:
    """With a database server the key must come from the environment: serve says so."""
    result = cli({**env, "GATEWAY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "serve")
    assert result.returncode == 2
    assert "GATEWAY_SECRET_KEYS" in result.stderr


def _bury(data_dir: Path, account_id: str, count: int) -> None:
    """``count`` dead letters of the account, each failed a second after the one before."""
    engine = create_engine(f"sqlite:///{data_dir / 'gateway.db'}")
    moment = 1_700_000_000.25
    with engine.begin() as conn:
        conn.execute(
            insert(OUTBOX),
            [
                {
                    "account_id": account_id,
                    "kind": "event",
                    "target_id": "endpoint",
                    "payload": {},
                    "status": "dead",
                    "attempts": 8,
                    "available_at": moment + n,
                    "last_error": "HTTP 500",
                    "created_at": moment,
                    "updated_at": moment + n,
                }
                for n in range(count)
            ],
        )
    engine.dispose()


def test_dead_letters_are_listed_page_by_page(env: dict[str, str], tmp_path: Path) -> None:
    """`deadletter list --json` prints the list of letters it always did, each with the
    cursor to continue after it; --before continues, and stderr says when more follow."""
    account = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    _bury(tmp_path / "data", account["id"], 5)
    keys = {"id", "kind", "target_id", "attempts", "error", "created_at", "failed_at"}
    listed: list[str] = []
    args = ["deadletter", "list", account["id"], "--limit", "2", "--json"]
    result = cli(env, *args)
    for _page in range(3):
        items = json_of(result)
        assert [set(item) for item in items] == [{*keys, "cursor"}] * len(items)
        listed.extend(item["id"] for item in items)
        if "more:" not in result.stderr:
            break
        assert f"more: --before {items[-1]['cursor']}" in result.stderr
        result = cli(env, *args, "--before", items[-1]["cursor"])
    assert listed == ["5", "4", "3", "2", "1"]
    refused = cli(env, "deadletter", "list", account["id"], "--before", "nope")
    assert refused.returncode == 1
    assert "before" in refused.stderr


def _failed_reply(data_dir: Path, account_id: str, channel_id: str) -> tuple[str, int]:
    """A reply whose send ran out of attempts, as the outbox leaves it: the message
    failed with the provider's error, its send a dead letter. Its id and the letter's."""
    db = Database(make_engine(f"sqlite:///{data_dir / 'gateway.db'}"))
    try:
        receipt = run(
            chat.receive_message(
                db,
                InboundMessage(
                    channel_id=channel_id,
                    account_id=account_id,
                    queue_id="q-1",
                    contact_address="whatsapp:+31612345678",
                    local_address="whatsapp:" + NUMBER,
                    contact_name="Ada",
                    text="Where is my order?",
                    media=[],
                    provider_message_id="SM" + "0" * 32,
                    dedup_keys=[],
                    received_at=datetime.now(UTC),
                ),
                actor=OPERATOR_CLI,
            )
        )
        reply = run(
            outbound.queue_reply(
                db,
                account_id=account_id,
                conversation_id=str(receipt.conversation_id),
                outgoing=Outgoing(text="On its way", template=None, author=None),
                actor=OPERATOR_CLI,
            )
        )

        def fail(tx: Transaction) -> int:
            tx.conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id == reply.id)
                .values(
                    status="failed",
                    status_rank=STATUS_RANK["failed"],
                    error_code="503",
                    error_message="HTTP 503",
                )
            )
            pk: int = tx.conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.target_id == reply.id)
                .values(status="dead", attempts=3, last_error="HTTP 503")
                .returning(OUTBOX.c.pk)
            ).scalar_one()
            return pk

        return reply.id, run(db.transact(fail))
    finally:
        db.dispose()


def test_replaying_a_failed_reply_moves_it_back_to_pending_by_the_operator(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`deadletter replay` queues the send again and the reply is pending once more, its
    error cleared, with a status change by the CLI's operator in the history."""
    account, channel = _whatsapp_channel(env)
    message_id, letter = _failed_reply(tmp_path / "data", account["id"], channel["id"])
    result = cli(env, "deadletter", "replay", account["id"], str(letter))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "replayed 1"
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'gateway.db'}")
    with engine.connect() as conn:
        message = conn.execute(select(MESSAGES).where(MESSAGES.c.id == message_id)).one()
        row = conn.execute(select(OUTBOX).where(OUTBOX.c.pk == letter)).one()
        changes = conn.execute(
            select(EVENTS).where(
                EVENTS.c.asset_id == message_id, EVENTS.c.type == "message.status_changed"
            )
        ).all()
    engine.dispose()
    assert (message.status, message.error_code, message.error_message) == ("pending", None, None)
    assert (row.status, row.attempts) == ("pending", 0)
    [change] = changes
    assert (change.actor_name, change.actor_id) == ("Operator", "cli")
    assert (change.details["previous_status"], change.details["status"]) == ("failed", "pending")


def test_conversation_list_shows_when_the_window_closes(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A WhatsApp conversation's line ends with the close of its customer service window;
    the JSON has it as ``window_closes_at``."""
    account, channel = _whatsapp_channel(env)
    _failed_reply(tmp_path / "data", account["id"], channel["id"])
    listed = cli(env, "conversation", "list", account["id"])
    assert listed.returncode == 0, listed.stderr
    assert "whatsapp:+31612345678  Ada  window until " in listed.stdout
    [item] = json_of(cli(env, "conversation", "list", account["id"], "--json"))
    assert item["window_closes_at"] in listed.stdout


def _whatsapp_channel(
    env: dict[str, str], provider: str = "twilio"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An account with Twilio (or CM.com) set and a WhatsApp channel, through the CLI."""
    account = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    credentials = (
        ["set-twilio", account["id"], "--account-sid", SID, "--auth-token", TOKEN]
        if provider == "twilio"
        else ["set-cm", account["id"], "--cm-account-id", "cm-1", "--product-token", CM_TOKEN]
    )
    result = cli(env, "integration", *credentials, "--name", "Support")
    assert result.returncode == 0, result.stderr
    channel = json_of(
        cli(
            env,
            "channel",
            "add",
            account["id"],
            "--provider",
            provider,
            "--type",
            "whatsapp",
            "--number",
            NUMBER,
            "--queue",
            "q-1",
            "--json",
        )
    )
    return account, channel


def test_template_list_and_a_conversation_started_by_template(
    env: dict[str, str], twilio: tuple[FakeTwilio, str]
) -> None:
    """template list --json names each template's id, approval and variables; conversation
    start sends one to a contact who never wrote; a missing variable exits 1 naming it."""
    fake = twilio[0]
    order = fake.add_template(SID, "order_update", "Order {{1}} ships {{2}}.")
    fake.add_template(SID, "promo", "Sale!", approval="rejected")
    made, added = _whatsapp_channel(env)
    account, channel = made["id"], added["id"]
    listed = json_of(cli(env, "template", "list", account, "--channel", channel, "--json"))
    assert (listed[0]["id"], listed[0]["approval"]) == (order, "approved")
    assert [v["name"] for v in listed[0]["variables"]] == ["1", "2"]
    text = cli(env, "template", "list", account, "--channel", channel)
    assert "order_update  en  approved  variables: 1, 2" in text.stdout
    missing = cli(
        env,
        "conversation",
        "start",
        account,
        "--channel",
        channel,
        "--to",
        "+31612345678",
        "--template",
        order,
        "--var",
        "1=A-1",
    )
    assert missing.returncode == 1
    assert "missing 2" in missing.stderr
    started = json_of(
        cli(
            env,
            "conversation",
            "start",
            account,
            "--channel",
            channel,
            "--to",
            "+31612345678",
            "--template",
            order,
            "--var",
            "1=A-1",
            "--var",
            "2=today",
            "--json",
        )
    )
    assert started["opened"] is True
    assert started["message"]["status"] == "pending"
    neither = cli(env, "conversation", "reply", account, started["conversation_id"])
    assert neither.returncode == 1
    assert "text or template" in neither.stderr


def test_template_set_registers_a_cm_channels_templates(
    env: dict[str, str], tmp_path: Path
) -> None:
    made, added = _whatsapp_channel(env, "cm")
    account, channel = made["id"], added["id"]
    file = tmp_path / "templates.json"
    template = {"name": "hello", "namespace": "ns_1", "language": "nl", "body": "Hoi {{1}}"}
    file.write_text(json.dumps([template]))
    assert (
        cli(env, "template", "set", account, "--channel", channel, "--file", str(file)).returncode
        == 0
    )
    listed = json_of(cli(env, "template", "list", account, "--channel", channel, "--json"))
    assert [(t["id"], t["body"]) for t in listed] == [("hello/nl", "Hoi {{1}}")]
    file.write_text("[{]")
    broken = cli(env, "template", "set", account, "--channel", channel, "--file", str(file))
    assert broken.returncode == 1
    assert "--file" in broken.stderr
