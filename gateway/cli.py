"""The ``cloudlink-gateway`` command.

The CLI works on the same data directory / database URL as the server (from the same
``GATEWAY_`` variables), directly through the service functions, so it works whether
or not the server is running.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import ValidationError

from gateway.accounts import service as accounts
from gateway.errors import GatewayError
from gateway.events.service import OPERATOR_CLI
from gateway.security import generate_key
from gateway.settings import Settings
from observability.logging import configure_logging
from storage.engine import Database, make_engine
from storage.migrate import upgrade


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "GATEWAY_" + "_".join(str(p) for p in error["loc"]).upper()
            click.echo(f"configuration error: {name}: {error['msg']}", err=True)
        sys.exit(2)


@contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """A migrated database for one CLI command."""
    engine = make_engine(
        settings.effective_database_url, pool_size=1, sqlite_synchronous=settings.sqlite_synchronous
    )
    upgrade(engine)
    db = Database(engine, threads=1)
    try:
        yield db
    finally:
        db.dispose()


def _emit(value: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(value, default=str) if as_json else text)


def _run_service(fn: Any, **kwargs: Any) -> Any:
    settings = load_settings()
    with database(settings) as db:
        try:
            return fn(db, **kwargs)
        except GatewayError as exc:
            click.echo(f"error: {exc.detail}", err=True)
            sys.exit(1)


@click.group()
def main() -> None:
    """cloudlink-gateway: connects CloudLink to Entra ID, Twilio, CM.com and Graph."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port.")
def serve(host: str, port: int) -> None:
    """Migrate the database, then serve HTTP."""
    import uvicorn

    from gateway.app import create_app

    settings = load_settings()
    configure_logging(settings.log_level)
    engine = make_engine(
        settings.effective_database_url, pool_size=1, sqlite_synchronous=settings.sqlite_synchronous
    )
    upgrade(engine)
    engine.dispose()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )


@main.command()
def migrate() -> None:
    """Bring the database schema to the newest revision."""
    settings = load_settings()
    configure_logging(settings.log_level)
    with database(settings):
        click.echo("database is at the newest schema revision")


@main.group()
def account() -> None:
    """Customer accounts."""


@account.command("create")
@click.option("--name", required=True, help="Display name of the account.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def account_create(name: str, as_json: bool) -> None:
    """Create an account; prints its id."""
    created = _run_service(accounts.create_account, name=name, actor=OPERATOR_CLI)
    _emit({"id": created["id"], "name": created["name"]}, as_json, created["id"])


@account.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def account_list(as_json: bool) -> None:
    """List accounts."""
    items = _run_service(accounts.list_accounts)
    _emit(items, as_json, "\n".join(f"{a['id']}  {a['name']}" for a in items))


@main.command("scim-keys")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def scim_keys(account_id: str, as_json: bool) -> None:
    """Generate the Tenant URL and Secret Token for Entra (the old token stops working)."""
    settings = load_settings()
    keys = _run_service(
        accounts.generate_scim_keys,
        account_id=account_id,
        actor=OPERATOR_CLI,
        public_url=settings.public_url,
    )
    _emit(
        {"tenant_url": keys.tenant_url, "secret_token": keys.secret_token},
        as_json,
        f"Tenant URL:   {keys.tenant_url}\nSecret Token: {keys.secret_token}",
    )


@main.group()
def integration() -> None:
    """Integrations of an account."""


@integration.command("list")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def integration_list(account_id: str, as_json: bool) -> None:
    """List an account's integrations."""
    settings = load_settings()
    items = _run_service(
        accounts.list_integrations, account_id=account_id, public_url=settings.public_url
    )
    _emit(items, as_json, "\n".join(f"{i['kind']}  {i['status']}" for i in items))


@integration.command("add")
@click.argument("account_id")
@click.argument("kind")
def integration_add(account_id: str, kind: str) -> None:
    """Add an integration (e.g. azure_ad_sync)."""
    settings = load_settings()
    _run_service(
        accounts.add_integration,
        account_id=account_id,
        kind=kind,
        actor=OPERATOR_CLI,
        public_url=settings.public_url,
    )
    click.echo(f"added {kind}")


@integration.command("remove")
@click.argument("account_id")
@click.argument("kind")
def integration_remove(account_id: str, kind: str) -> None:
    """Remove an integration; removing azure_ad_sync revokes the SCIM token."""
    _run_service(accounts.remove_integration, account_id=account_id, kind=kind, actor=OPERATOR_CLI)
    click.echo(f"removed {kind}")


@main.command("generate-key")
def generate_key_command() -> None:
    """Print a new key for GATEWAY_SECRET_KEYS."""
    click.echo(generate_key())
