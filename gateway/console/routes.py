"""Console pages and actions: parse the form, call the admin API's service function, show.

Mounted by the app under ``/admin``. A GET shows; a POST changes, then redirects to the
page that shows the change (so a reload never repeats it), except where the answer holds
a secret shown once (the SCIM keys), which is rendered in place and never stored.
"""

from __future__ import annotations

import hmac
import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.accounts import service as accounts
from gateway.accounts.models import AVAILABLE_KINDS, AccountOut
from gateway.console import i18n, sessions
from gateway.console.forms import read_form
from gateway.console.guard import CSRF_REFUSED, SESSION_COOKIE, open_console, signed_in
from gateway.console.pages import PREFIX, STATIC, Console, safe_next
from gateway.events import service as events
from gateway.events.export import filename, history_csv
from gateway.events.models import EventOut
from gateway.events.service import ACTIONS, Actor
from gateway.web.auth import WrongToken, client_key, token_check
from gateway.web.errors import InvalidValue, RateLimited
from gateway.web.routing import TemplateRoute

CONSOLE = Actor("Operator", "console")
SIGN_IN_COOKIE = "gateway_console_sign_in"
ACCOUNTS_PER_PAGE = 50
EVENTS_PER_PAGE = 50
CATEGORIES = ("Provisioning", "Admin", "Messaging", "Presence")
ASSETS = (
    "Account",
    "Integration",
    "User",
    "Channel",
    "Conversation",
    "Message",
    "Contact",
    "Endpoint",
    "Outbox",
    "Presence monitor",
    "Presence",
)
# What a redirect after a change says, by its ``done`` parameter (never free text).
NOTICES = {
    "created": "Account created.",
    "renamed": "Account renamed.",
    "added": "Integration added.",
    "removed": "Integration removed.",
    "signed_out": "Signed out.",
}


def _cookie_secure(console: Console) -> bool:
    return console.state.settings.public_url.startswith("https://")


def _notice(console: Console) -> str | None:
    key = console.request.query_params.get("done")
    return console._(NOTICES[key]) if key in NOTICES else None


def _redirect(path: str, done: str | None = None) -> Response:
    return RedirectResponse(path + (f"?done={done}" if done else ""), status_code=303)


# Sign-in and sign-out


async def sign_in_page(request: Request) -> Response:
    console = await open_console(request)
    if console.session is not None:
        return _redirect(safe_next(request.query_params.get("next")))
    return _sign_in_form(console, status=200)


def _sign_in_form(console: Console, *, status: int, error: str | None = None) -> Response:
    """The form, with a CSRF value doubled in a cookie: there is no session to hold one yet."""
    request = console.request
    pre = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    notice = _notice(console)
    if request.query_params.get("ended") and error is None:
        notice = console._("Your session has ended; sign in again.")
    response = console.render(
        "sign_in.html",
        status=status,
        disabled=console.state.settings.admin_token is None,
        sign_in_csrf=pre,
        next=safe_next(request.query_params.get("next") or console.form.get("next")),
        notice=notice,
        error=error,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        pre,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(console),
    )
    return response


def _check_token(presented: str, expected: str) -> None:
    """The operator token, compared in constant time; a wrong one counts as a guess."""
    if not hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise WrongToken("The operator token is not valid.")


async def sign_in(request: Request) -> Response:
    console = await open_console(request)
    console.form = await read_form(request)
    expected_pre = request.cookies.get(SIGN_IN_COOKIE, "")
    presented_pre = console.form.get("csrf", "")
    if not expected_pre or not hmac.compare_digest(
        presented_pre.encode("utf-8", "replace"), expected_pre.encode("utf-8", "replace")
    ):
        return _sign_in_form(console, status=403, error=console._(CSRF_REFUSED))
    settings = console.state.settings
    if settings.admin_token is None:
        return _sign_in_form(console, status=401)
    try:
        with token_check(console.state, "console", client_key(request)):
            _check_token(console.form.get("token", ""), settings.admin_token.get_secret_value())
    except WrongToken:
        return _sign_in_form(
            console, status=401, error=console._("The operator token is not valid.")
        )
    except RateLimited as exc:
        response = _sign_in_form(
            console,
            status=429,
            error=console._(
                "Too many wrong tokens from this client; retry after %(seconds)s s.",
                seconds=exc.headers.get("Retry-After", "?"),
            ),
        )
        response.headers.update(exc.headers)
        return response
    session_id = await sessions.start(
        console.state.db,
        sessions.Lifetime.of(settings),
        subject="operator",
        name="Operator",
    )
    response = _redirect(safe_next(console.form.get("next")))
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(console),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
    return response


@signed_in
async def sign_out(request: Request, console: Console) -> Response:
    await sessions.end(console.state.db, request.cookies[SESSION_COOKIE])
    response = RedirectResponse(f"{PREFIX}/sign-in?done=signed_out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


async def switch_language(request: Request) -> Response:
    wanted = request.query_params.get("to", "")
    response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    if wanted in i18n.LANGUAGES:
        response.set_cookie(
            i18n.COOKIE, wanted, max_age=365 * 86400, path=PREFIX, samesite="lax", httponly=True
        )
    return response


async def home(_request: Request) -> Response:
    return _redirect(f"{PREFIX}/accounts")


async def static(request: Request) -> Response:
    found = STATIC.get(request.path_params["name"])
    if found is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response(
        found.body,
        media_type=found.media_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


# Accounts


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
        notice=_notice(console),
    )


@signed_in
async def create_account(_request: Request, console: Console) -> Response:
    account = await accounts.create_account(
        console.state.db, name=console.form.get("name", ""), actor=CONSOLE
    )
    return _redirect(f"{PREFIX}/accounts/{account.id}", "created")


def _base(account_id: str) -> str:
    return f"{PREFIX}/accounts/{account_id}"


def _account_page(
    console: Console, template: str, account: AccountOut, *, tab: str, **values: Any
) -> Response:
    """A page of one account: its heading, its tabs, and ``values``."""
    return console.render(
        template, section="accounts", tab=tab, account=account, base=_base(account.id), **values
    )


@signed_in
async def account_page(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    account = await accounts.get_account(console.state.db, account_id=account_id)
    integrations = await accounts.list_integrations(
        console.state.db, account_id=account_id, public_url=console.state.settings.public_url
    )
    present = {item.kind for item in integrations}
    return _account_page(
        console,
        "account.html",
        account,
        tab="integrations",
        integrations=integrations,
        addable=[(kind, accounts.KINDS[kind]) for kind in AVAILABLE_KINDS if kind not in present],
        notice=_notice(console),
    )


@signed_in
async def rename_account(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    await accounts.rename_account(
        console.state.db, account_id=account_id, name=console.form.get("name", ""), actor=CONSOLE
    )
    return _redirect(_base(account_id), "renamed")


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
    return _redirect(_base(account_id), "added")


@signed_in
async def remove_integration(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    kind = request.path_params["kind"]
    if request.method == "GET" or console.form.get("confirm") != "yes":
        account = await accounts.get_account(console.state.db, account_id=account_id)
        name = accounts.KINDS.get(kind)
        if name is None:
            raise InvalidValue(f"kind must be one of {', '.join(AVAILABLE_KINDS)}.")
        _ = console._
        return _account_page(
            console,
            "confirm.html",
            account,
            tab="integrations",
            heading=_("Remove %(name)s?", name=name),
            lines=[_("The integration and its settings are removed from this account.")],
            action=f"{_base(account_id)}/integrations/{kind}/remove",
            button=_("Remove"),
            danger=True,
        )
    await accounts.remove_integration(
        console.state.db, account_id=account_id, kind=kind, actor=CONSOLE
    )
    return _redirect(_base(account_id), "removed")


@signed_in
async def scim_keys(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    account = await accounts.get_account(console.state.db, account_id=account_id)
    _ = console._
    if request.method == "GET" or console.form.get("confirm") != "yes":
        return _account_page(
            console,
            "confirm.html",
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
            action=f"{_base(account_id)}/scim-keys",
            button=_("Generate keys"),
            danger=False,
        )
    keys = await accounts.generate_scim_keys(
        console.state.db,
        account_id=account_id,
        actor=CONSOLE,
        public_url=console.state.settings.public_url,
    )
    return _account_page(
        console,
        "keys.html",
        account,
        tab="integrations",
        keys=keys,
    )


# Events


def _local_time(raw: str, offset_minutes: int, name: str) -> datetime | None:
    """A ``datetime-local`` value, in the browser's zone (``tz``: minutes east of UTC)."""
    if not raw:
        return None
    try:
        naive = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidValue(f"{name} must be a date and time, e.g. 2026-01-31T09:00.") from None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    return (naive - timedelta(minutes=offset_minutes)).replace(tzinfo=UTC)


def _event_criteria(console: Console) -> tuple[events.EventFilter, dict[str, str]]:
    params = console.request.query_params
    shown = {
        name: params.get(name, "")[:200]
        for name in ("actor", "action", "asset", "event_type", "since", "until", "tz")
    }
    tz = shown["tz"]
    offset = int(tz) if tz.lstrip("-").isdigit() and len(tz) <= 5 else 0
    if abs(offset) > 18 * 60:
        offset = 0
    criteria = events.event_filter(
        {name: value for name, value in shown.items() if value},
        since=_local_time(shown["since"], offset, "From"),
        until=_local_time(shown["until"], offset, "To"),
    )
    return criteria, shown


def _filter_query(shown: dict[str, str]) -> str:
    return urlencode({name: value for name, value in shown.items() if value})


@signed_in
async def events_page(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    criteria, shown = _event_criteria(console)
    raw_cursor = request.query_params.get("cursor", "")
    before = int(raw_cursor) if raw_cursor.isdigit() and len(raw_cursor) < 19 else None

    def read(conn: Connection) -> tuple[AccountOut, list[EventOut], str | None]:
        account = accounts.account_out(accounts.require_account(conn, account_id))
        items, next_cursor = events.history_page(
            conn, account_id, criteria, before=before, limit=EVENTS_PER_PAGE
        )
        return account, items, next_cursor

    account, items, next_cursor = await console.state.db.query(read)
    return _account_page(
        console,
        "events.html",
        account,
        tab="events",
        events=items,
        next_cursor=next_cursor,
        filters=shown,
        query=_filter_query(shown),
        actions=ACTIONS,
        categories=CATEGORIES,
        assets=ASSETS,
    )


@signed_in
async def export_events(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    criteria, _shown = _event_criteria(console)

    def read(conn: Connection) -> list[Any]:
        accounts.require_account(conn, account_id)
        return events.history_rows(conn, account_id, criteria)

    rows = await console.state.db.query(read)
    return Response(
        history_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename(account_id)}"'},
    )


ACCOUNT = PREFIX + "/accounts/{account_id}"
ROUTES = [
    TemplateRoute(PREFIX, home, methods=["GET"]),
    TemplateRoute(PREFIX + "/", home, methods=["GET"]),
    TemplateRoute(PREFIX + "/sign-in", sign_in_page, methods=["GET"]),
    TemplateRoute(PREFIX + "/sign-in", sign_in, methods=["POST"]),
    TemplateRoute(PREFIX + "/sign-out", sign_out, methods=["POST"]),
    TemplateRoute(PREFIX + "/language", switch_language, methods=["GET"]),
    TemplateRoute(PREFIX + "/static/{name}", static, methods=["GET"]),
    TemplateRoute(PREFIX + "/accounts", accounts_page, methods=["GET"]),
    TemplateRoute(PREFIX + "/accounts", create_account, methods=["POST"]),
    TemplateRoute(ACCOUNT, account_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/name", rename_account, methods=["POST"]),
    TemplateRoute(ACCOUNT + "/integrations", add_integration, methods=["POST"]),
    TemplateRoute(
        ACCOUNT + "/integrations/{kind}/remove", remove_integration, methods=["GET", "POST"]
    ),
    TemplateRoute(ACCOUNT + "/scim-keys", scim_keys, methods=["GET", "POST"]),
    TemplateRoute(ACCOUNT + "/events", events_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/events.csv", export_events, methods=["GET"]),
]
