"""The ``cloudlink-gateway`` command: its group, serving and migrating, and where each
group of subcommands is mounted (``accounts``, ``messaging``, ``presence``).

The CLI works on the same data directory / database URL as the server (from the same
``GATEWAY_`` variables), through the same service functions and the same write path
(``Database.transact``), so it works whether or not the server is running.
"""

from __future__ import annotations

import os
import shutil
import sys

import click

from gateway.app import migrate_database
from gateway.cli import accounts, messaging, presence
from gateway.cli.common import fail, load_settings, secret_box
from gateway.security import generate_key
from gateway.settings import Settings
from observability.logging import configure_logging
from observability.metrics import MULTIPROCESS_ENV, new_metrics_directory
from storage.migrate import SchemaState, SchemaUnusable


@click.group()
def main() -> None:
    """cloudlink-gateway: connects CloudLink to Entra ID, Twilio, CM.com and Graph."""


def _shown_host(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104


def _welcome(settings: Settings, host: str, port: int, *, public_url_chosen: bool) -> None:
    """What a new operator needs: where the admin API is, its token, the next command."""
    base = f"http://{_shown_host(host)}:{port}"
    click.echo(f"cloudlink-gateway serving on {base} with {settings.workers} worker(s)", err=True)
    click.echo(f"  public URL (tenant URLs are built on it): {settings.public_url}", err=True)
    click.echo(f"  admin API: {base}/api/v1 (OpenAPI: {base}/api/v1/openapi.json)", err=True)
    if settings.admin_token is None:
        blank = "GATEWAY_ADMIN_TOKEN" in os.environ
        click.echo(
            "  admin API disabled: "
            + ("GATEWAY_ADMIN_TOKEN is set but empty; " if blank else "")
            + "set GATEWAY_ADMIN_TOKEN (at least 32 characters, e.g. `openssl rand -hex 32`) "
            "and restart to use it",
            err=True,
        )
    else:
        click.echo("  admin token: the value of GATEWAY_ADMIN_TOKEN", err=True)
    # The CLI does not know the port the server binds: tell it, unless the operator chose.
    prefix = "" if public_url_chosen else f"GATEWAY_PUBLIC_URL={base} "
    command = _command_name()
    click.echo(
        "  next: create an account and its Entra keys with\n"
        f'    {prefix}{command} account create --name "Contoso" --json\n'
        f"    {prefix}{command} scim-keys ACCOUNT_ID --json\n"
        "  messaging: connect Twilio, add a channel and a CloudLink endpoint with\n"
        f"    {prefix}{command} integration set-twilio ACCOUNT_ID --name N "
        "--account-sid AC... --auth-token ...\n"
        f"    {prefix}{command} channel add ACCOUNT_ID --provider twilio --type whatsapp "
        "--number +E164 --queue QUEUE_ID --json\n"
        f"    {prefix}{command} endpoint add ACCOUNT_ID --url https://... --json",
        err=True,
    )


def _command_name() -> str:
    """How to call this command again: its name when on PATH, else the path it was run by."""
    if shutil.which("cloudlink-gateway") is not None or not sys.argv[0].endswith("gateway"):
        return "cloudlink-gateway"
    return os.path.relpath(sys.argv[0])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Server processes accepting on the port [default: GATEWAY_WORKERS or 1].",
)
def serve(host: str, port: int, workers: int | None) -> None:
    """Migrate the database, then serve HTTP."""
    from gateway.cli import serving

    # Every worker process reads its settings from the environment: put the choices
    # made here (public URL following the bound port, worker count) there first.
    public_url_chosen = "GATEWAY_PUBLIC_URL" in os.environ
    if not public_url_chosen:
        os.environ["GATEWAY_PUBLIC_URL"] = f"http://{_shown_host(host)}:{port}"
    if workers is not None:
        os.environ["GATEWAY_WORKERS"] = str(workers)
    settings = load_settings()
    configure_logging(settings.log_level)
    secret_box(settings)
    _schema(settings)
    metrics_dir = None
    if settings.workers > 1:
        # Metrics of every worker are summed from files in one directory the gateway
        # owns: made fresh at start (those of servers that were killed are removed then),
        # removed at exit.
        metrics_dir = new_metrics_directory()
        os.environ[MULTIPROCESS_ENV] = str(metrics_dir)
    _welcome(settings, host, port, public_url_chosen=public_url_chosen)
    try:
        serving.run(settings, host, port)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _schema(settings: Settings, *, migrate: bool | None = None) -> SchemaState:
    """Migrate (or check) the schema, or end with what to do when it cannot be used."""
    try:
        return migrate_database(settings, migrate=migrate)
    except SchemaUnusable as exc:
        fail(str(exc), configuration=True)


@main.command()
def migrate() -> None:
    """Bring the database schema to the newest revision."""
    settings = load_settings()
    configure_logging(settings.log_level)
    state = _schema(settings, migrate=True)
    if state.verdict == "compatible":
        click.echo(f"{state.explained()}: nothing to migrate")
    else:
        click.echo(f"database is at schema revision {state.revision}, this version's newest")


@main.command("generate-key")
def generate_key_command() -> None:
    """Print a new key for GATEWAY_SECRET_KEYS."""
    click.echo(generate_key())


main.add_command(accounts.account)
main.add_command(accounts.scim_keys)
main.add_command(accounts.integration)
for command in (
    messaging.set_twilio,
    messaging.set_cm,
    presence.set_teams,
    presence.office365_consent,
    presence.office365_enable,
):
    accounts.integration.add_command(command)
for group in (
    messaging.channel,
    messaging.endpoint,
    messaging.dead_letter,
    messaging.conversation,
    messaging.template,
    presence.monitor,
    presence.presence,
):
    main.add_command(group)
