"""Teams and Office 365 in the console: the Teams app's settings and its client secret's
expiry, presence both ways, the presence monitors (add, the authorize link, status and
users, renew, delete), how many the account's users need, the system check with each
result and its advice, one user's presence, sync all with its progress; and Office 365's
admin consent (its link, its outcome) and switch. The admin API's service functions do
each of these; the forms are its body models."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import models as account_models
from gateway.accounts import office365
from gateway.accounts import service as accounts
from gateway.accounts.models import AccountOut, ConsentOut, IntegrationOut
from gateway.console.forms import filled
from gateway.console.guard import signed_in
from gateway.console.pages import Console
from gateway.console.views import (
    ACCOUNT,
    CONSOLE,
    account_page,
    base,
    confirm_page,
    confirmed,
    integrations,
    redirect,
)
from gateway.presence import check, monitors
from gateway.presence import service as presence
from gateway.presence.models import MonitorAdd
from gateway.web.bodies import validated
from gateway.web.errors import NotFound
from gateway.web.routing import TemplateRoute

# The client secret's expiry is warned about this long before it comes.
SECRET_WARNING = timedelta(days=30)


def _secret_expiry(teams: IntegrationOut | None) -> tuple[str | None, str]:
    """The secret's expiry date and how it stands: ok, soon or expired (or unknown)."""
    raw = (teams.config.get("secret_expires") if teams else None) or None
    if raw is None:
        return None, "unknown"
    expires = date.fromisoformat(str(raw))
    today = datetime.now(UTC).date()
    if expires <= today:
        return str(raw), "expired"
    if expires - today <= SECRET_WARNING:
        return str(raw), "soon"
    return str(raw), "ok"


async def _teams_page(console: Console, account: AccountOut, **values: object) -> Response:
    db = console.state.db
    teams = (await integrations(console, account.id)).get(account_models.TEAMS)
    expires, expiry = _secret_expiry(teams)
    found = await monitors.list_monitors(db, account_id=account.id)
    sync = await check.sync_status(db, account_id=account.id)
    values.setdefault("added", None)
    values.setdefault("check", None)
    values.setdefault("user", None)
    values.setdefault("email", "")
    return account_page(
        console,
        "teams.html",
        account,
        tab="teams",
        teams=teams,
        expires=expires,
        expiry=expiry,
        monitors=found,
        sync=sync,
        **values,
    )


@signed_in
async def teams_page(request: Request, console: Console) -> Response:
    account = await accounts.get_account(
        console.state.db, account_id=request.path_params["account_id"]
    )
    return await _teams_page(console, account)


@signed_in
async def save_teams(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    state = console.state
    form = console.form
    fields: dict[str, object] = {
        **filled(form, "name", "tenant_id", "client_id", "client_secret", "secret_expires"),
        "presence_to_teams": form.get("presence_to_teams") == "yes",
        "presence_from_teams": form.get("presence_from_teams") == "yes",
    }
    await monitors.save_teams(
        state.db,
        secrets=state.secrets,
        identity=state.providers.identity,
        account_id=account_id,
        body=validated(account_models.TeamsSettings, fields),
        actor=CONSOLE,
        public_url=state.settings.public_url,
    )
    return redirect(f"{base(account_id)}/teams", "saved")


@signed_in
async def add_monitor(request: Request, console: Console) -> Response:
    """A new monitor and the link its Teams user opens to authorize it (shown here)."""
    account_id = request.path_params["account_id"]
    state = console.state
    body = validated(MonitorAdd, {"upn": console.form.get("upn", "").strip()})
    added = await monitors.add_monitor(
        state.db,
        secrets=state.secrets,
        public_url=state.settings.public_url,
        account_id=account_id,
        upn=body.upn,
        actor=CONSOLE,
    )
    account = await accounts.get_account(state.db, account_id=account_id)
    return await _teams_page(console, account, added=added)


@signed_in
async def change_monitor(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    monitor_id = request.path_params["monitor_id"]
    change = request.path_params["change"]
    state = console.state
    account = await accounts.get_account(state.db, account_id=account_id)
    if change == "renew":
        renewed = await monitors.renew_monitor(
            state.db,
            secrets=state.secrets,
            public_url=state.settings.public_url,
            account_id=account_id,
            monitor_id=monitor_id,
        )
        return await _teams_page(console, account, added=renewed)
    if change != "delete":
        raise NotFound(f"No change {change!r}: renew or delete.")
    if not confirmed(console):
        monitor = await state.db.query(monitors.find_monitor, account_id, monitor_id)
        _ = console._
        return confirm_page(
            console,
            account,
            tab="teams",
            heading=_("Delete this presence monitor?"),
            lines=[
                monitor.upn,
                _("Its subscription ends; the users it watched wait for another monitor."),
            ],
            action=f"{base(account_id)}/teams/monitors/{monitor_id}/delete",
            button=_("Delete"),
        )
    await monitors.delete_monitor(
        state.db, account_id=account_id, monitor_id=monitor_id, actor=CONSOLE
    )
    return redirect(f"{base(account_id)}/teams", "monitor_deleted")


@signed_in
async def system_check(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    state = console.state
    found = await check.system_check(
        state.db,
        secrets=state.secrets,
        identity=state.providers.identity,
        http=state.providers.http,
        public_url=state.settings.public_url,
        account_id=account_id,
    )
    account = await accounts.get_account(state.db, account_id=account_id)
    return await _teams_page(console, account, check=found)


@signed_in
async def user_presence(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    email = request.query_params.get("email", "").strip()[:320]
    account = await accounts.get_account(console.state.db, account_id=account_id)
    found = (
        await presence.user_check(console.state.db, account_id=account_id, email=email)
        if email
        else None
    )
    return await _teams_page(console, account, user=found, email=email)


@signed_in
async def sync_all(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    await check.sync_all(console.state.db, account_id=account_id)
    return redirect(f"{base(account_id)}/teams", "sync_started")


async def _office365_page(
    console: Console, account_id: str, consent: ConsentOut | None = None
) -> Response:
    account = await accounts.get_account(console.state.db, account_id=account_id)
    return account_page(
        console,
        "office365.html",
        account,
        tab="office365",
        office=(await integrations(console, account_id)).get(account_models.OFFICE365),
        consent=consent,
    )


@signed_in
async def office365_page(request: Request, console: Console) -> Response:
    return await _office365_page(console, request.path_params["account_id"])


@signed_in
async def office365_consent(request: Request, console: Console) -> Response:
    """A fresh consent link, shown here (earlier ones stop working)."""
    account_id = request.path_params["account_id"]
    state = console.state
    consent = await office365.request_consent(
        state.db,
        identity=state.providers.identity,
        settings=state.settings,
        account_id=account_id,
        actor=CONSOLE,
    )
    return await _office365_page(console, account_id, consent)


@signed_in
async def office365_enable(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    enabled = console.form.get("enabled") == "yes"
    await office365.enable_office365(
        console.state.db,
        account_id=account_id,
        enabled=enabled,
        actor=CONSOLE,
        public_url=console.state.settings.public_url,
    )
    return redirect(f"{base(account_id)}/office365", "enabled" if enabled else "disabled")


ROUTES = [
    TemplateRoute(ACCOUNT + "/teams", teams_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/teams", save_teams, methods=["POST"]),
    TemplateRoute(ACCOUNT + "/teams/monitors", add_monitor, methods=["POST"]),
    TemplateRoute(
        ACCOUNT + "/teams/monitors/{monitor_id}/{change}", change_monitor, methods=["POST"]
    ),
    TemplateRoute(ACCOUNT + "/teams/check", system_check, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/teams/presence", user_presence, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/teams/sync", sync_all, methods=["POST"]),
    TemplateRoute(ACCOUNT + "/office365", office365_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/office365/consent", office365_consent, methods=["POST"]),
    TemplateRoute(ACCOUNT + "/office365/enabled", office365_enable, methods=["POST"]),
]
