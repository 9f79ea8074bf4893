"""Schemathesis over the admin API's OpenAPI document: the code answers what the spec says.

The schema is loaded from the running app (``/api/v1/openapi.json``) and exercised the
way ``st run`` does (coverage, then fuzzing, in positive and negative modes) through the
engine, because the ``from_fixture`` pytest integration of schemathesis 4.32 reads a
node attribute that pytest 9.2 no longer has. One seeded account (with SCIM keys, so it
has integrations and events) stands in for generated account ids part of the time.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
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

from gateway.accounts import service as accounts
from gateway.app import create_app
from gateway.events.service import OPERATOR_CLI
from gateway.settings import Settings
from storage.engine import Database
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL
from tests.support.sync import run

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


def seed_account(db: Database) -> str:
    """An account with SCIM keys: it has an integration, a tenant URL and events."""
    account = run(accounts.create_account(db, name="Seeded", actor=OPERATOR_CLI))
    run(
        accounts.generate_scim_keys(
            db, account_id=account.id, actor=OPERATOR_CLI, public_url=PUBLIC_URL
        )
    )
    return account.id


def config() -> schemathesis.Config:
    """A bounded run, repeatable from its seed, with the operator token and ``CHECKS``.

    No example database: a run neither reads nor writes ``.hypothesis``, so the seed
    alone decides what is sent.
    """
    checks: dict[str, Any] = {"enabled": False}
    checks.update({name: {"enabled": True} for name in CHECKS})
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


def use_seeded_account(schema: BaseSchema, account_id: str) -> None:
    """Send valid account ids to ``account_id`` part of the time; leave invalid ones alone.

    Fuzzing draws between the generated id and the seeded one; the coverage phase, which
    derives one case per boundary, uses the seeded id wherever its id is valid, so that
    its boundary values meet real data rather than a 404.
    """

    @schema.hook
    def flatmap_path_parameters(
        context: HookContext, path_parameters: dict[str, Any] | None
    ) -> Any:
        if not path_parameters or not is_uuid(path_parameters.get(ACCOUNT_ID)):
            return st.just(path_parameters)
        return st.sampled_from([path_parameters, {**path_parameters, ACCOUNT_ID: account_id}])

    @schema.hook
    def map_case(context: HookContext, case: Case[Any]) -> Case[Any]:
        phase = case.meta.phase.name if case.meta is not None else None
        valid = case.path_parameters and is_uuid(case.path_parameters.get(ACCOUNT_ID))
        if phase == TestPhase.COVERAGE and valid:
            case.path_parameters[ACCOUNT_ID] = account_id
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
def admin_schema(settings: Settings, db: Database) -> Iterator[BaseSchema]:
    """The document served by a running app, whose seeded account stands in for ids.

    Schemathesis starts the app's lifespan itself on first use; it is ended here so the
    database is released before the fixtures that own it are torn down.
    """
    account_id = seed_account(db)
    schema = schemathesis.openapi.from_asgi(
        "/api/v1/openapi.json", create_app(settings), config=config()
    )
    use_seeded_account(schema, account_id)
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()


def test_admin_api_conforms_to_its_openapi_document(admin_schema: BaseSchema) -> None:
    """Every generated request gets an answer the document allows, and never a 5xx."""
    outcome = run_schemathesis(admin_schema)
    print(f"schemathesis sent {outcome.cases} cases")
    assert not outcome.problems, "\n\n".join(sorted(set(outcome.problems)))
    assert outcome.succeeded == operation_labels(admin_schema)
