"""The CLI's Microsoft commands: the Teams integration, Office 365 consent, presence.
Same service functions and write path as the admin API."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import click

from gateway.accounts import office365
from gateway.accounts.models import TeamsSettings
from gateway.cli.common import JSON, Tools, emit, model_of, plain, run_service, run_with_tools
from gateway.events.service import OPERATOR_CLI
from gateway.presence import check, monitors, service, teams
from gateway.presence.models import MonitorAdd

ON_OFF = click.Choice(["on", "off"])


def _toggle(value: str | None) -> bool | None:
    return None if value is None else value == "on"


@click.command("set-teams")
@click.argument("account_id")
@click.option("--name", required=True, help="A name (the client secret's description).")
@click.option("--tenant-id", required=True, help="Directory (tenant) id of the Azure app.")
@click.option("--client-id", required=True, help="Application (client) id of the Azure app.")
@click.option(
    "--client-secret",
    required=True,
    envvar="CLOUDLINK_TEAMS_CLIENT_SECRET",
    help="The client secret's value (stored encrypted); or set CLOUDLINK_TEAMS_CLIENT_SECRET "
    "to keep it out of the process list and shell history.",
)
@click.option(
    "--secret-expires",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="When the client secret expires (YYYY-MM-DD); the system check warns before.",
)
@click.option(
    "--presence-to-teams", type=ON_OFF, default=None, help="Write CloudLink presence into Teams."
)
@click.option(
    "--presence-from-teams",
    type=ON_OFF,
    default=None,
    help="Carry Teams presence into CloudLink (through presence monitors).",
)
@JSON
def set_teams(
    *,
    account_id: str,
    name: str,
    tenant_id: str,
    client_id: str,
    client_secret: str,
    secret_expires: datetime | None,
    presence_to_teams: str | None,
    presence_from_teams: str | None,
    as_json: bool,
) -> None:
    """Connect the account's Microsoft Teams (the app is checked with Microsoft first)."""
    body = model_of(
        TeamsSettings,
        name=name,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        secret_expires=secret_expires.date() if secret_expires else None,
        presence_to_teams=_toggle(presence_to_teams),
        presence_from_teams=_toggle(presence_from_teams),
    )

    async def work(tools: Tools) -> object:
        stored = await teams.configure_teams(
            tools.db,
            secrets=tools.secrets,
            identity=tools.providers.identity,
            account_id=account_id,
            body=body,
            actor=OPERATOR_CLI,
            public_url=tools.settings.public_url,
        )
        await monitors.resume(tools.db, secrets=tools.secrets, account_id=account_id)
        return stored

    item = run_with_tools(work)
    warnings = getattr(item, "warnings", None) or []
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    emit(plain(item), as_json, f"microsoft_teams configured for {account_id}")


@click.command("office365-consent")
@click.argument("account_id")
@JSON
def office365_consent(account_id: str, as_json: bool) -> None:
    """A link for an Office 365 administrator to grant consent (valid one hour)."""

    async def work(tools: Tools) -> object:
        return await office365.request_consent(
            tools.db,
            identity=tools.providers.identity,
            settings=tools.settings,
            account_id=account_id,
            actor=OPERATOR_CLI,
        )

    consent = run_with_tools(work)
    emit(
        plain(consent),
        as_json,
        f"send this link to an Office 365 administrator:\n{getattr(consent, 'consent_url', '')}",
    )


@click.command("office365-enable")
@click.argument("account_id")
@click.option("--off", is_flag=True, help="Disable instead.")
@JSON
def office365_enable(account_id: str, off: bool, as_json: bool) -> None:
    """Enable Office 365 once consent was granted (or could not be detected)."""

    async def work(tools: Tools) -> object:
        return await office365.enable_office365(
            tools.db,
            account_id=account_id,
            enabled=not off,
            actor=OPERATOR_CLI,
            public_url=tools.settings.public_url,
        )

    item = run_with_tools(work)
    emit(plain(item), as_json, f"office365 {getattr(item, 'status', '')}")


@click.group("monitor")
def monitor() -> None:
    """Presence monitors: Teams accounts that watch the presence of up to 650 users each."""


@monitor.command("add")
@click.argument("account_id")
@click.option("--upn", required=True, help="The monitor account's user principal name.")
@JSON
def monitor_add(account_id: str, upn: str, as_json: bool) -> None:
    """Add a monitor; follow (or send) its authorize_url to sign it in."""
    body = model_of(MonitorAdd, upn=upn)

    async def work(tools: Tools) -> object:
        return await monitors.add_monitor(
            tools.db,
            secrets=tools.secrets,
            public_url=tools.settings.public_url,
            account_id=account_id,
            upn=body.upn,
            actor=OPERATOR_CLI,
        )

    added = run_with_tools(work)
    emit(
        plain(added),
        as_json,
        f"monitor {getattr(added, 'id', '')} added; sign it in at:\n"
        f"{getattr(added, 'authorize_url', '')}",
    )


@monitor.command("list")
@click.argument("account_id")
@JSON
def monitor_list(account_id: str, as_json: bool) -> None:
    """The monitors, their status and users, and whether they are enough."""
    found = run_service(monitors.list_monitors, account_id=account_id)
    lines = [f"{m.id}  {m.upn}  {m.status}  {m.users} user(s)" for m in found.items]
    if found.warning:
        lines.append(f"warning: {found.warning}")
    if as_json:
        emit(plain(found.items), True, "")
        return
    emit(None, False, "\n".join(lines) or "no monitors")


@monitor.command("renew")
@click.argument("account_id")
@click.argument("monitor_id")
@JSON
def monitor_renew(account_id: str, monitor_id: str, as_json: bool) -> None:
    """A new sign-in link (retry, renew after a secret or app change, copy URL)."""

    async def work(tools: Tools) -> object:
        return await monitors.renew_monitor(
            tools.db,
            secrets=tools.secrets,
            public_url=tools.settings.public_url,
            account_id=account_id,
            monitor_id=monitor_id,
        )

    renewed = run_with_tools(work)
    emit(plain(renewed), as_json, f"sign it in at:\n{getattr(renewed, 'authorize_url', '')}")


@monitor.command("delete")
@click.argument("account_id")
@click.argument("monitor_id")
def monitor_delete(account_id: str, monitor_id: str) -> None:
    """Remove a monitor (its users move to the others)."""
    run_service(
        monitors.delete_monitor, account_id=account_id, monitor_id=monitor_id, actor=OPERATOR_CLI
    )
    click.echo(f"removed {monitor_id}")


@click.group("presence")
def presence() -> None:
    """Verify and troubleshoot Teams presence."""


@presence.command("check")
@click.argument("account_id")
@JSON
def presence_check(account_id: str, as_json: bool) -> None:
    """The system check: each item with its status and what to do."""

    async def work(tools: Tools) -> object:
        return await check.system_check(
            tools.db,
            secrets=tools.secrets,
            identity=tools.providers.identity,
            http=tools.providers.http,
            public_url=tools.settings.public_url,
            account_id=account_id,
        )

    found: Any = run_with_tools(work)
    lines = [
        f"{i.status:7} {i.name}: {i.detail}" + (f"\n        → {i.action}" if i.action else "")
        for i in found.items
    ]
    emit(plain(found), as_json, "\n".join(lines))
    if found.status == "error":
        sys.exit(3)


@presence.command("user")
@click.argument("account_id")
@click.argument("email")
@JSON
def presence_user(account_id: str, email: str, as_json: bool) -> None:
    """One user's presence: per source, combined, and the raw Teams data."""
    found: Any = run_service(service.user_check, account_id=account_id, email=email)
    sources = ", ".join(f"{k}: {v.availability}/{v.activity}" for k, v in found.sources.items())
    emit(plain(found), as_json, f"{found.email}: {sources or 'no presence yet'}")


@presence.command("sync")
@click.argument("account_id")
@click.option("--wait", is_flag=True, help="Wait until every monitor has read back its users.")
@JSON
def presence_sync(account_id: str, wait: bool, as_json: bool) -> None:
    """Sync all: every monitor reads back its users' presence (with progress)."""
    status: Any = run_service(check.sync_all, account_id=account_id)
    while wait and not status.done:
        click.echo(f"{status.users - status.users_pending}/{status.users} user(s) synced", err=True)
        time.sleep(1)
        status = run_service(check.sync_status, account_id=account_id)
    failed = f", {status.monitors_failed} failed" if status.monitors_failed else ""
    emit(
        plain(status),
        as_json,
        f"sync all: {status.monitors_pending} monitor(s) pending{failed}",
    )
