"""Signing in and out of the console, its language, and its static files.

The operator token is checked by the limiter of wrong tokens the admin API uses; a right
one starts a new server-side session (``sessions``), a wrong one is counted.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.console import i18n, sessions
from gateway.console.forms import read_form
from gateway.console.guard import (
    CSRF_REFUSED,
    SESSION_COOKIE,
    open_console,
    secure_cookies,
    set_session_cookie,
    signed_in,
)
from gateway.console.pages import PREFIX, STATIC, Console, safe_next
from gateway.console.views import notice, redirect
from gateway.web.auth import WrongToken, client_key, token_check
from gateway.web.errors import RateLimited
from gateway.web.routing import TemplateRoute

SIGN_IN_COOKIE = "gateway_console_sign_in"


async def sign_in_page(request: Request) -> Response:
    console = await open_console(request)
    if console.session is not None:
        return redirect(safe_next(request.query_params.get("next")))
    return sign_in_form(console, status=200)


def sign_in_form(console: Console, *, status: int, error: str | None = None) -> Response:
    """The form, with a CSRF value doubled in a cookie: there is no session to hold one yet."""
    request = console.request
    pre = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    shown = notice(console)
    if request.query_params.get("ended") and error is None:
        shown = console._("Your session has ended; sign in again.")
    response = console.render(
        "sign_in.html",
        status=status,
        disabled=console.state.settings.admin_token is None,
        oidc=console.state.settings.console_oidc,
        sign_in_csrf=pre,
        next=safe_next(request.query_params.get("next") or console.form.get("next")),
        notice=shown,
        error=error,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        pre,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(console.state.settings),
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
        return sign_in_form(console, status=403, error=console._(CSRF_REFUSED))
    settings = console.state.settings
    if settings.admin_token is None:
        return sign_in_form(console, status=401)
    try:
        with token_check(console.state, "console", client_key(request)):
            _check_token(console.form.get("token", ""), settings.admin_token.get_secret_value())
    except WrongToken:
        return sign_in_form(
            console, status=401, error=console._("The operator token is not valid.")
        )
    except RateLimited as exc:
        response = sign_in_form(
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
    response = redirect(safe_next(console.form.get("next")))
    set_session_cookie(response, session_id, settings)
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
    return redirect(f"{PREFIX}/accounts")


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


ROUTES = [
    TemplateRoute(PREFIX, home, methods=["GET"]),
    TemplateRoute(PREFIX + "/", home, methods=["GET"]),
    TemplateRoute(PREFIX + "/sign-in", sign_in_page, methods=["GET"]),
    TemplateRoute(PREFIX + "/sign-in", sign_in, methods=["POST"]),
    TemplateRoute(PREFIX + "/sign-out", sign_out, methods=["POST"]),
    TemplateRoute(PREFIX + "/language", switch_language, methods=["GET"]),
    TemplateRoute(PREFIX + "/static/{name}", static, methods=["GET"]),
]
