"""Accounts and their integrations: list, search, create, rename; add and remove an
integration; Azure AD Sync's keys, generated after a confirmation and shown once."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import service as accounts
from gateway.accounts.models import AVAILABLE_KINDS
from gateway.console import sessions
from gateway.console.guard import signed_in
from gateway.console.pages import PREFIX, Console
from gateway.console.views import (
    ACCOUNT,
    CONSOLE,
    account_page,
    base,
    confirm_page,
    confirmed,
    notice,
    redirect,
)
from gateway.web.errors import InvalidValue
from gateway.web.routing import TemplateRoute

ACCOUNTS_PER_PAGE = 50
# Where each integration is set up, and what of its settings the panel shows (its secrets
# only as the service masks them).
SETTINGS_PAGES = {
    "twilio": "/integrations/twilio/settings",
    "cmcom": "/integrations/cm/settings",
    "microsoft_teams": "/teams",
    "office365": "/office365",
}
SHOWN_SETTINGS = (
    "name",
    "account_sid",
    "auth_token",
    "cm_account_id",
    "product_token",
    "client_id",
    "client_secret",
    "secret_expires",
)


def _page_number(console: Console) -> int:
    raw = console.request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0 else 1


@signed_in
async def accounts_page(request: Request, console: Console) -> Response:
    q = request.query_params.get("q", "")[:200]
    page = _page_number(console)
    items, total = await accounts.search_accounts(
        console.state.db, text=q, offset=(page - 1) * ACCOUNTS_PER_PAGE, limit=ACCOUNTS_PER_PAGE
    )
    return console.render(
        "accounts.html",
        section="accounts",
        accounts=items,
        total=total,
        q=q,
        page=page,
        pages=max(1, math.ceil(total / ACCOUNTS_PER_PAGE)),
        notice=notice(console),
    )


@signed_in
async def create_account(_request: Request, console: Console) -> Response:
    account = await accounts.create_account(
        console.state.db, name=console.form.get("name", ""), actor=CONSOLE
    )
    return redirect(f"{PREFIX}/accounts/{account.id}", "created")


@signed_in
async def account_page_(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    account = await accounts.get_account(console.state.db, account_id=account_id)
    integrations = await accounts.list_integrations(
        console.state.db, account_id=account_id, public_url=console.state.settings.public_url
    )
    present = {item.kind for item in integrations}
    return account_page(
        console,
        "account.html",
        account,
        tab="integrations",
        integrations=integrations,
        addable=[(kind, accounts.KINDS[kind]) for kind in AVAILABLE_KINDS if kind not in present],
        settings_pages=SETTINGS_PAGES,
        shown_settings=SHOWN_SETTINGS,
        notice=notice(console),
    )


@signed_in
async def rename_account(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    await accounts.rename_account(
        console.state.db, account_id=account_id, name=console.form.get("name", ""), actor=CONSOLE
    )
    return redirect(base(account_id), "renamed")


@signed_in
async def add_integration(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    await accounts.add_integration(
        console.state.db,
        account_id=account_id,
        kind=console.form.get("kind", ""),
        actor=CONSOLE,
        public_url=console.state.settings.public_url,
    )
    return redirect(base(account_id), "added")


@signed_in
async def remove_integration(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    kind = request.path_params["kind"]
    if not confirmed(console):
        account = await accounts.get_account(console.state.db, account_id=account_id)
        name = accounts.KINDS.get(kind)
        if name is None:
            raise InvalidValue(f"kind must be one of {', '.join(AVAILABLE_KINDS)}.")
        _ = console._
        return confirm_page(
            console,
            account,
            tab="integrations",
            heading=_("Remove %(name)s?", name=name),
            lines=[_("The integration and its settings are removed from this account.")],
            action=f"{base(account_id)}/integrations/{kind}/remove",
            button=_("Remove"),
        )
    await accounts.remove_integration(
        console.state.db, account_id=account_id, kind=kind, actor=CONSOLE
    )
    return redirect(base(account_id), "removed")


@signed_in
async def scim_keys(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    account = await accounts.get_account(console.state.db, account_id=account_id)
    _ = console._
    if not confirmed(console):
        return confirm_page(
            console,
            account,
            tab="integrations",
            heading=_("Azure AD Sync"),
            lines=[
                _(
                    "Press the Generate keys button to create keys to copy to Azure AD SCIM "
                    "provisioning. Only generate keys as needed."
                ),
                _(
                    "Each time keys are generated, the tenant URL and token of a previous sync "
                    "stop working, and the SCIM application must be set up with the new keys."
                ),
            ],
            action=f"{base(account_id)}/scim-keys",
            button=_("Generate keys"),
            danger=False,
        )
    keys = await accounts.generate_scim_keys(
        console.state.db,
        account_id=account_id,
        actor=CONSOLE,
        public_url=console.state.settings.public_url,
    )
    assert console.session is not None  # signed_in
    await sessions.reveal(
        console.state.db,
        console.state.secrets,
        console.session,
        {"kind": "scim_keys", "tenant_url": keys.tenant_url, "secret_token": keys.secret_token},
    )
    return redirect(f"{base(account_id)}/scim-keys/shown")


@signed_in
async def shown_keys(request: Request, console: Console) -> Response:
    """The keys just generated, once: a reload finds nothing to show and changes nothing."""
    account_id = request.path_params["account_id"]
    assert console.session is not None  # signed_in
    keys = await sessions.take_reveal(
        console.state.db, console.state.secrets, console.session, "scim_keys"
    )
    if keys is None:
        return redirect(base(account_id))
    account = await accounts.get_account(console.state.db, account_id=account_id)
    return account_page(console, "keys.html", account, tab="integrations", keys=keys)


ROUTES = [
    TemplateRoute(PREFIX + "/accounts", accounts_page, methods=["GET"]),
    TemplateRoute(PREFIX + "/accounts", create_account, methods=["POST"]),
    TemplateRoute(ACCOUNT, account_page_, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/name", rename_account, methods=["POST"]),
    TemplateRoute(ACCOUNT + "/integrations", add_integration, methods=["POST"]),
    TemplateRoute(
        ACCOUNT + "/integrations/{kind}/remove", remove_integration, methods=["GET", "POST"]
    ),
    TemplateRoute(ACCOUNT + "/scim-keys", scim_keys, methods=["GET", "POST"]),
    TemplateRoute(ACCOUNT + "/scim-keys/shown", shown_keys, methods=["GET"]),
]
