"""What every CLI command shares: settings, output, and running service calls.

Commands run the same async service functions as the admin API, on the same database,
through ``asyncio.run``. Every failure goes through ``fail``: one line on stderr, then
exit 2 for the configuration (nothing ran) or 1 for a refused command. ``JSON`` is the
one ``--json`` option; with it stdout holds one JSON document for scripts.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
from pydantic import BaseModel, ValidationError

from gateway.app import open_database
from gateway.clients.providers import Providers
from gateway.secret_keys import MissingSecretKeys, load_secret_keys
from gateway.security import SecretBox
from gateway.settings import Settings
from gateway.web.errors import GatewayError
from observability.logging import configure_logging
from storage.engine import Database
from storage.errors import DatabaseUnavailable
from storage.migrate import SchemaUnusable

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(*lines: str, configuration: bool = False) -> NoReturn:
    """End the command: each line on stderr, then exit 2 for the configuration (nothing
    ran) or 1 for a command the gateway refused."""
    prefix = "configuration error" if configuration else "error"
    for line in lines:
        click.echo(f"{prefix}: {line}", err=True)
    sys.exit(2 if configuration else 1)


def secret_box(settings: Settings) -> SecretBox:
    """The key ring of ``settings`` (exit 2 when there is none to use)."""
    try:
        return SecretBox(load_secret_keys(settings))
    except MissingSecretKeys as exc:
        fail(str(exc), configuration=True)


@contextmanager
def refusals_fail() -> Iterator[None]:
    """A refusal of the services (or a database out of reach) ends the command with its
    detail."""
    try:
        yield
    except (GatewayError, DatabaseUnavailable) as exc:
        fail(exc.detail)


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 naming each bad variable.

    Log events go to stderr (warnings and worse, unless the level is DEBUG), so that
    ``--json`` output on stdout stays one JSON document for scripts.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(
            *(
                "GATEWAY_" + "_".join(str(p) for p in error["loc"]).upper() + f": {error['msg']}"
                for error in exc.errors()
            ),
            configuration=True,
        )
    configure_logging("DEBUG" if settings.log_level == "DEBUG" else "WARNING")
    return settings


def emit(value: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(value, default=str) if as_json else text)


def plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def usable_database(settings: Settings) -> Database:
    """The database of ``settings``, migrated or checked; a schema this version cannot
    use ends the command (exit 2) with what to do."""
    try:
        return open_database(settings)
    except SchemaUnusable as exc:
        fail(str(exc), configuration=True)


def run_service(fn: Callable[..., Coroutine[Any, Any, T]], **kwargs: Any) -> T:
    """Run one service call on the configured database; errors exit 1 with their detail."""
    db = usable_database(load_settings())
    try:
        with refusals_fail():
            return asyncio.run(fn(db, **kwargs))
    finally:
        db.dispose()


@dataclass(frozen=True)
class Tools:
    """What the commands that store secrets or call providers need beside the database."""

    settings: Settings
    db: Database
    secrets: SecretBox
    providers: Providers


def run_with_tools(work: Callable[[Tools], Coroutine[Any, Any, T]]) -> T:
    """Like ``run_service``, with the key ring and provider clients of the server."""
    settings = load_settings()
    secrets = secret_box(settings)

    async def main() -> T:
        providers = Providers.from_settings(settings)
        try:
            return await work(Tools(settings, db, secrets, providers))
        finally:
            await providers.close()

    db = usable_database(settings)
    try:
        with refusals_fail():
            return asyncio.run(main())
    finally:
        db.dispose()


def model_of(model: type[M], **values: Any) -> M:
    """Validate options as the API validates a body; exit 1 naming each wrong option."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        fail(
            *(
                "--"
                + "-".join(str(p) for p in error["loc"]).replace("_", "-")
                + f": {error['msg']}"
                for error in exc.errors()
            )
        )
