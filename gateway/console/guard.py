"""Who may use a console page: a live session, and on every POST its CSRF token.

A page asked for without a session redirects to the sign-in page (an htmx request gets
``HX-Redirect`` instead, so the whole page goes there). A POST whose token is missing or
not the session's is refused with 403 before anything is read or changed; the token
comes in the form's ``csrf`` field, or in ``X-CSRF-Token``, which htmx sends from the
page's ``hx-headers``. A service's refusal (a ``GatewayError``) is shown as a page with
its status and what to do, in the console's layout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.console import i18n, sessions
from gateway.console.forms import read_form
from gateway.console.pages import PREFIX, Console, safe_next
from gateway.settings import Settings
from gateway.web.errors import Forbidden, GatewayError
from gateway.web.state import app_state

SESSION_COOKIE = "gateway_console"
CSRF_HEADER = "x-csrf-token"
CSRF_REFUSED = (
    "This form has expired or did not come from this console; nothing was changed. "
    "Reload the page and try again."
)

Page = Callable[[Request, Console], Awaitable[Response]]
Handler = Callable[[Request], Awaitable[Response]]

_TITLES = {401: "Sign in", 403: "Refused", 404: "Not found", 409: "Conflict", 503: "Unavailable"}


def secure_cookies(settings: Settings) -> bool:
    """Cookies are sent over https only when the gateway is reached over https."""
    return settings.public_url.startswith("https://")


def set_session_cookie(response: Response, session_id: str, settings: Settings) -> None:
    """The session's cookie: HttpOnly, SameSite=Strict, for the console's paths only."""
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(settings),
    )


def language(request: Request) -> str:
    return i18n.choose(request.cookies.get(i18n.COOKIE), request.headers.get("accept-language", ""))


async def open_console(request: Request) -> Console:
    """The console of a request, its session found (or None)."""
    state = app_state(request)
    session = await sessions.find(
        state.db, sessions.Lifetime.of(state.settings), request.cookies.get(SESSION_COOKIE)
    )
    return Console(request=request, state=state, session=session, lang=language(request))


def sign_in_redirect(request: Request, console: Console) -> Response:
    query = {"next": safe_next(console.here())}
    if request.cookies.get(SESSION_COOKIE):
        query["ended"] = "1"
    target = f"{PREFIX}/sign-in?{urlencode(query)}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    response = RedirectResponse(target, status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


def failure(console: Console, exc: GatewayError) -> Response:
    """A service's refusal as a console page."""
    _ = console._
    title = _(_TITLES.get(exc.status, "Refused"))
    back = console.request.headers.get("referer", "")
    response = console.render(
        "error.html",
        status=exc.status,
        title=title,
        detail=exc.detail,
        back=safe_next(_local_path(back)),
    )
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


def _local_path(url: str) -> str:
    """The path and query of a same-origin Referer (the console sends it only to itself)."""
    _scheme, sep, rest = url.partition("://")
    if not sep:
        return ""
    _host, slash, path = rest.partition("/")
    return "/" + path if slash else ""


def signed_in(page: Page) -> Handler:
    """``page`` for a signed-in admin; a POST's CSRF token checked and its form read first."""

    async def handler(request: Request) -> Response:
        console = await open_console(request)
        if console.session is None:
            return sign_in_redirect(request, console)
        try:
            if request.method == "POST":
                console.form = await read_form(request)
                presented = request.headers.get(CSRF_HEADER) or console.form.get("csrf")
                if not console.session.csrf_matches(presented):
                    raise Forbidden(console._(CSRF_REFUSED))
            return await page(request, console)
        except GatewayError as exc:
            return failure(console, exc)

    return handler
