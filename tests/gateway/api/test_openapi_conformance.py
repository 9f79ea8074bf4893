"""Schemathesis over the admin API's OpenAPI document: the code answers what the spec says.

The schema is loaded from the running app (``/api/v1/openapi.json``) and exercised the
way ``st run`` does (coverage, then fuzzing, in positive and negative modes) through the
engine, because the ``from_fixture`` pytest integration of schemathesis 4.32 reads a
node attribute that pytest 9.2 no longer has. One seeded account (with SCIM keys, so it
has integrations and events) stands in for generated account ids part of the time.
"""

from __future__ import annotations

import itertools
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
import schemathesis.engine
from hypothesis import strategies as st
from schemathesis import Case, HookContext
from schemathesis.core.result import Ok
from schemathesis.engine import events
from schemathesis.generation.meta import TestPhase
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema
from sqlalchemy import func, select, update

from gateway.accounts import service as accounts
from gateway.accounts.models import CmSettings, TeamsSettings, TwilioSettings
from gateway.accounts.providers import configure_cm, configure_twilio
from gateway.app import create_app, open_database
from gateway.channels.models import ChannelCreate
from gateway.channels.service import add_channel
from gateway.chat import service as chat
from gateway.chat.models import InboundMessage, Media
from gateway.clients.http import new_http_client
from gateway.clients.identity import IdentityPlatform
from gateway.clients.twilio import TwilioApi
from gateway.delivery.endpoints import add_endpoint
from gateway.events.service import OPERATOR_CLI
from gateway.presence.monitors import add_monitor
from gateway.presence.teams import configure_teams
from gateway.scim import service as scim
from gateway.security import SecretBox
from gateway.settings import Settings
from storage.engine import Database
from storage.tables import OUTBOX, PRESENCE_MONITORS
from storage.transaction import Transaction
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL, QuietProviders, user_body
from tests.support.sync import run

# Schemathesis runs every operation: about half a minute per backend.
pytestmark = pytest.mark.slow

ACCOUNT_ID = "account_id"
# Enough to reach every boundary the coverage phase derives and a spread of fuzzed
# values, while a run stays within seconds per backend.
MAX_EXAMPLES = 50
SEED = 20260131
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
)


SEEDED_SID = "AC" + "5e" * 16
SEEDED_TOKEN = "seeded-auth-token-0123456789"
SEEDED_NUMBER = "+14155550142"
SEEDED_TENANT = "5eed0000-0000-4000-8000-000000000001"
SEEDED_CLIENT = "5eed0000-0000-4000-8000-000000000002"
SEEDED_SECRET = "seeded-client-secret-0123456789"
SEEDED_EMAIL = "user1@contoso.example"


@dataclass(frozen=True)
class Seeded:
    """Ids of real data the generated requests meet part of the time."""

    ids: dict[str, Any]


async def seed_account(db: Database, settings: Settings, providers: QuietProviders) -> Seeded:
    """An account with every kind of data the admin API shows.

    SCIM keys (integrations, events), Twilio and CM.com integrations with a channel each,
    a conversation with a message, an endpoint and a dead letter to replay.
    """
    account = await accounts.create_account(db, name="Seeded", actor=OPERATOR_CLI)
    await accounts.generate_scim_keys(
        db, account_id=account.id, actor=OPERATOR_CLI, public_url=PUBLIC_URL
    )
    providers.twilio.add_account(SEEDED_SID, SEEDED_TOKEN)
    providers.twilio.add_number(SEEDED_SID, SEEDED_NUMBER)
    secrets = SecretBox(settings.secret_keys)
    async with new_http_client(5.0) as http:
        twilio = TwilioApi(http, settings.twilio_api_url, settings.twilio_content_url)
        await configure_twilio(
            db,
            secrets=secrets,
            twilio=twilio,
            account_id=account.id,
            body=TwilioSettings(name="Seeded", account_sid=SEEDED_SID, auth_token=SEEDED_TOKEN),
            actor=OPERATOR_CLI,
            public_url=PUBLIC_URL,
        )
        channel = await add_channel(
            db,
            secrets=secrets,
            twilio=twilio,
            account_id=account.id,
            body=ChannelCreate(provider="twilio", type="sms", number=SEEDED_NUMBER, queue_id="q-1"),
            actor=OPERATOR_CLI,
            public_url=PUBLIC_URL,
        )
        whatsapp = await add_channel(
            db,
            secrets=secrets,
            twilio=twilio,
            account_id=account.id,
            body=ChannelCreate(
                provider="twilio", type="whatsapp", number=SEEDED_NUMBER, queue_id="q-1"
            ),
            actor=OPERATOR_CLI,
            public_url=PUBLIC_URL,
        )
        providers.twilio.add_template(SEEDED_SID, "order_update", "Order {{1}} ships {{2}}.")
        await configure_cm(
            db,
            secrets=secrets,
            account_id=account.id,
            body=CmSettings(name="Seeded", cm_account_id="seeded", product_token="seeded-token-1"),
            actor=OPERATOR_CLI,
            public_url=PUBLIC_URL,
        )
        spare = await add_channel(
            db,
            secrets=secrets,
            twilio=twilio,
            account_id=account.id,
            body=ChannelCreate(
                provider="cm", type="messenger", pages=["seeded-page"], queue_id="q"
            ),
            actor=OPERATOR_CLI,
            public_url=PUBLIC_URL,
        )
        cm_whatsapp = await add_channel(
            db,
            secrets=secrets,
            twilio=twilio,
            account_id=account.id,
            body=ChannelCreate(provider="cm", type="whatsapp", number=SEEDED_NUMBER, queue_id="q"),
            actor=OPERATOR_CLI,
            public_url=PUBLIC_URL,
        )
    providers.microsoft.add_tenant(SEEDED_TENANT)
    providers.microsoft.add_app(SEEDED_TENANT, SEEDED_CLIENT, SEEDED_SECRET)
    async with new_http_client(5.0) as http:
        await configure_teams(
            db,
            secrets=secrets,
            identity=IdentityPlatform(http, settings.login_url),
            account_id=account.id,
            body=TeamsSettings(
                name="Seeded",
                tenant_id=SEEDED_TENANT,
                client_id=SEEDED_CLIENT,
                client_secret=SEEDED_SECRET,
            ),
            actor=OPERATOR_CLI,
            public_url=PUBLIC_URL,
        )
    await scim.create_user(db, scim.Tenant(account.id, PUBLIC_URL), user_body(1))
    monitor = await add_monitor(
        db,
        secrets=secrets,
        public_url=PUBLIC_URL,
        account_id=account.id,
        upn="monitor@contoso.example",
        actor=OPERATOR_CLI,
    )
    # Signed in, as far as sync all is concerned (no delivery runs in this test).
    await db.transact(
        lambda tx: tx.conn.execute(
            update(PRESENCE_MONITORS)
            .where(PRESENCE_MONITORS.c.id == monitor.id)
            .values(status="authorized")
        )
    )
    receipt = await chat.receive_message(
        db,
        InboundMessage(
            channel_id=channel.id,
            account_id=account.id,
            queue_id="q-1",
            contact_address="+31612345678",
            local_address=SEEDED_NUMBER,
            contact_name="Seeded contact",
            text="hello",
            media=[
                Media(
                    url=settings.twilio_api_url
                    + providers.twilio.add_media(SEEDED_SID, b"\x89PNG seeded", "image/png"),
                    content_type="image/png",
                )
            ],
            provider_message_id="MM" + "0" * 32,
            dedup_keys=["sid:seeded"],
            received_at=datetime.now(UTC),
        ),
        actor=OPERATOR_CLI,
    )
    endpoint = await add_endpoint(
        db,
        secrets=secrets,
        account_id=account.id,
        url="http://127.0.0.1:9/events",
        allow_private=True,
        actor=OPERATOR_CLI,
    )
    return Seeded(
        {
            ACCOUNT_ID: account.id,
            "channel_id": whatsapp.id,
            "sms_channel_id": channel.id,
            "spare_channel_id": spare.id,
            "cm_whatsapp_channel_id": cm_whatsapp.id,
            "conversation_id": str(receipt.conversation_id),
            "message_id": str(receipt.message_id),
            "endpoint_id": endpoint.id,
            "email": SEEDED_EMAIL,
            "monitor_id": monitor.id,
            "index": 0,
        }
    )


def bury_everything(db: Database) -> str:
    """Turn every pending outbox row into a dead letter; the id of one of them."""

    def work(tx: Transaction) -> str:
        tx.conn.execute(update(OUTBOX).values(status="dead", last_error="seeded"))
        return str(tx.conn.execute(select(func.min(OUTBOX.c.pk))).scalar_one())

    return run(db.transact(work))


def config() -> schemathesis.Config:
    """A bounded run, repeatable from its seed, with the operator token and ``CHECKS``.

    No example database: a run neither reads nor writes ``.hypothesis``, so the seed
    alone decides what is sent.
    """
    checks: dict[str, Any] = {"enabled": False}
    checks.update({name: {"enabled": True} for name in CHECKS})
    # 422: well-formed values refused by a rule of the other side (DNS, a provider).
    checks["positive_data_acceptance"] = {
        "enabled": True,
        "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429", "5xx"],
    }
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
            "checks": checks,
        }
    )


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a UUID as the document spells one (a schema-valid account id)."""
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def use_seeded_data(schema: BaseSchema, seeded: Seeded) -> None:
    """Send seeded ids part of the time where the generated one is valid; leave invalid ones.

    Fuzzing draws between the generated ids and the seeded ones; the coverage phase, which
    derives one case per boundary, uses the seeded ids wherever its account id is valid,
    so that its boundary values meet real data rather than a 404. Twilio settings get the
    seeded credentials, and channel deletions the seeded channel, part of the time, as no
    generated value is a Twilio account or a channel id.
    """
    turns = itertools.count()

    def seeded_for(path_parameters: dict[str, Any]) -> dict[str, Any]:
        return {name: seeded.ids.get(name, value) for name, value in path_parameters.items()}

    @schema.hook
    def flatmap_path_parameters(
        context: HookContext, path_parameters: dict[str, Any] | None
    ) -> Any:
        if not path_parameters or not is_uuid(path_parameters.get(ACCOUNT_ID)):
            return st.just(path_parameters)
        return st.sampled_from([path_parameters, seeded_for(path_parameters)])

    @schema.hook
    def map_case(context: HookContext, case: Case[Any]) -> Case[Any]:
        phase = case.meta.phase.name if case.meta is not None else None
        valid = case.path_parameters and is_uuid(case.path_parameters.get(ACCOUNT_ID))
        # A negative case keeps the invalid value it was made to carry.
        negative = case.meta is not None and case.meta.generation.mode.name == "NEGATIVE"
        if phase == TestPhase.COVERAGE and valid and not negative:
            case.path_parameters = seeded_for(case.path_parameters)
        if (
            case.path.endswith("/twilio/settings")
            and isinstance(case.body, dict)
            and next(turns) % 3 == 0
        ):
            case.body = {**case.body, "account_sid": SEEDED_SID, "auth_token": SEEDED_TOKEN}
        if (
            case.path.endswith("/microsoft_teams/settings")
            and isinstance(case.body, dict)
            and next(turns) % 3 == 0
        ):
            case.body = {
                **case.body,
                "tenant_id": SEEDED_TENANT,
                "client_id": SEEDED_CLIENT,
                "client_secret": SEEDED_SECRET,
            }
        if case.path.endswith("/presence") and isinstance(case.body, dict) and next(turns) % 2:
            case.body = {**case.body, "user": SEEDED_EMAIL}
        if (
            case.path.endswith("/channels/delete")
            and isinstance(case.body, dict)
            and case.body.get("confirm") == "confirm"
            and next(turns) % 3 == 0
        ):
            case.body = {**case.body, "ids": [seeded.ids["spare_channel_id"]]}
        if (
            case.path.endswith("/templates")
            and case.method == "PUT"
            and case.path_parameters
            and is_uuid(case.path_parameters.get(ACCOUNT_ID))
            and next(turns) % 2 == 0
        ):
            case.path_parameters = {
                **case.path_parameters,
                ACCOUNT_ID: seeded.ids[ACCOUNT_ID],
                "channel_id": seeded.ids["cm_whatsapp_channel_id"],
            }
        if (
            case.path.endswith("/conversations")
            and case.method == "POST"
            and isinstance(case.body, dict)
            and next(turns) % 2 == 0
        ):
            case.body = {**case.body, "channel_id": seeded.ids["sms_channel_id"]}
        return case


def failures(event: events.ScenarioFinished) -> Iterator[str]:
    """Each failed check of a finished scenario, with the curl command that reproduces it."""
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.failure_info is not None:
                failure = check.failure_info.failure
                yield (
                    f"{event.label} [{check.name}] {failure.title}: {failure.message}\n"
                    f"{check.failure_info.code_sample}"
                )


def answered_2xx(event: events.ScenarioFinished) -> bool:
    """Whether any request of the scenario got a success, i.e. met real data."""
    responses = [i.response for i in event.recorder.interactions.values()]
    return any(r is not None and 200 <= r.status_code < 300 for r in responses)


@dataclass
class Outcome:
    """What a run did: cases sent, operations that succeeded at least once, what went wrong."""

    cases: int = 0
    succeeded: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def record(self, event: events.EngineEvent) -> None:
        """Take in one engine event."""
        if isinstance(event, events.ScenarioFinished):
            self.cases += len(event.recorder.cases)
            if event.label is not None and answered_2xx(event):
                self.succeeded.add(event.label)
            self.problems.extend(failures(event))
        elif isinstance(event, events.NonFatalError):
            trace = "".join(traceback.format_exception(event.value))
            self.problems.append(f"{event.label}: error\n{trace}")
        elif isinstance(event, events.FatalError):
            trace = "".join(traceback.format_exception(event.exception))
            self.problems.append(f"fatal error\n{trace}")


def operation_labels(schema: BaseSchema) -> set[str]:
    """``METHOD /path`` of every operation the document lists (each must load)."""
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    return {operation.label for operation in operations}


def run_schemathesis(schema: BaseSchema) -> Outcome:
    """Run every phase the config enables over every operation of ``schema``."""
    outcome = Outcome()
    for event in schemathesis.engine.from_schema(schema).execute():
        outcome.record(event)
    return outcome


@pytest.fixture
def admin_schema(
    make_settings: Callable[..., Settings], quiet_providers: QuietProviders
) -> Iterator[BaseSchema]:
    """The document served by a running app, whose seeded account stands in for ids.

    Schemathesis starts the app's lifespan itself on first use; it is ended here so the
    database is released before the fixtures that own it are torn down. Delivery is off,
    so the seeded dead letter stays dead until a generated request replays it.
    """
    # ignored_auth presents a wrong token to every operation: one client, many guesses.
    settings = make_settings(
        allow_private_endpoints=True, delivery_enabled=False, auth_failure_burst=0
    )
    db = open_database(settings)
    seeded = run(seed_account(db, settings, quiet_providers))
    bury_everything(db)
    schema = schemathesis.openapi.from_asgi(
        "/api/v1/openapi.json", create_app(settings), config=config()
    )
    use_seeded_data(schema, seeded)
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()
        db.dispose()


def test_admin_api_conforms_to_its_openapi_document(admin_schema: BaseSchema) -> None:
    """Every generated request gets an answer the document allows, and never a 5xx."""
    outcome = run_schemathesis(admin_schema)
    print(f"schemathesis sent {outcome.cases} cases")
    assert not outcome.problems, "\n\n".join(sorted(set(outcome.problems)))
    assert outcome.succeeded == operation_labels(admin_schema)
