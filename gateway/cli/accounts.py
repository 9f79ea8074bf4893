"""The CLI's account commands: accounts, their Entra keys, their integrations. Same
service functions and write path as the admin API."""

from __future__ import annotations

import click

from gateway.accounts import service as accounts
from gateway.cli.common import JSON, emit, load_settings, plain, run_service
from gateway.events.service import OPERATOR_CLI


@click.group()
def account() -> None:
    """Customer accounts."""


@account.command("create")
@click.option("--name", required=True, help="Display name of the account.")
@JSON
def account_create(name: str, as_json: bool) -> None:
    """Create an account; prints its id."""
    created = run_service(accounts.create_account, name=name, actor=OPERATOR_CLI)
    emit({"id": created.id, "name": created.name}, as_json, created.id)


@account.command("list")
@JSON
def account_list(as_json: bool) -> None:
    """List accounts."""
    items = run_service(accounts.list_accounts)
    emit(plain(items), as_json, "\n".join(f"{a.id}  {a.name}" for a in items))


@click.command("scim-keys")
@click.argument("account_id")
@JSON
def scim_keys(account_id: str, as_json: bool) -> None:
    """Generate the Tenant URL and Secret Token for Entra (the old token stops working)."""
    settings = load_settings()
    keys = run_service(
        accounts.generate_scim_keys,
        account_id=account_id,
        actor=OPERATOR_CLI,
        public_url=settings.public_url,
    )
    emit(
        {"tenant_url": keys.tenant_url, "secret_token": keys.secret_token},
        as_json,
        f"Tenant URL:   {keys.tenant_url}\nSecret Token: {keys.secret_token}",
    )


@click.group()
def integration() -> None:
    """Integrations of an account."""


@integration.command("list")
@click.argument("account_id")
@JSON
def integration_list(account_id: str, as_json: bool) -> None:
    """List an account's integrations."""
    settings = load_settings()
    items = run_service(
        accounts.list_integrations, account_id=account_id, public_url=settings.public_url
    )
    emit(plain(items), as_json, "\n".join(f"{i.kind}  {i.status}" for i in items))


@integration.command("add")
@click.argument("account_id")
@click.argument("kind")
def integration_add(account_id: str, kind: str) -> None:
    """Add an integration (e.g. azure_ad_sync)."""
    settings = load_settings()
    run_service(
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
    run_service(accounts.remove_integration, account_id=account_id, kind=kind, actor=OPERATOR_CLI)
    click.echo(f"removed {kind}")
