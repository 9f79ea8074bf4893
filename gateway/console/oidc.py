"""Sign-in to the console with Microsoft Entra: OpenID Connect, authorization code with
PKCE, for the people ``GATEWAY_CONSOLE_OIDC_ALLOWED`` names.

The sign-in's state, nonce and PKCE verifier travel in a cookie encrypted with the
gateway's keys, scoped to the callback's path and ``SameSite=Lax`` (Microsoft sends the
browser back by a cross-site redirect, which a Strict cookie would not follow), and good
for ten minutes. The ID token's signature, audience, issuer, expiry and nonce are
checked; then who signed in (UPN, email, object id, or a group of the token's ``groups``
claim) must be allowed. The session cookie is Strict, so the callback answers a page
that moves on by itself: that navigation is the console's own, and carries it.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.clients.http import ProviderError
from gateway.clients.identity import AppCredentials, pkce_pair
from gateway.console import sessions
from gateway.console.guard import open_console, secure_cookies, set_session_cookie
from gateway.console.pages import PREFIX, Console, safe_next
from gateway.console.sign_in import sign_in_form
from gateway.security import SecretBoxError
from gateway.settings import Settings
from gateway.web.errors import NotFound
from gateway.web.routing import TemplateRoute
from gateway.web.state import app_state

START = PREFIX + "/oidc/start"
CALLBACK = PREFIX + "/oidc"
STATE_COOKIE = "gateway_console_oidc"
STATE_SECONDS = 600


def _creds(settings: Settings) -> AppCredentials:
    secret = settings.console_oidc_client_secret
    if secret is None or settings.console_oidc_tenant is None:
        raise NotFound("Sign-in with Microsoft Entra is not set up on this gateway.")
    return AppCredentials(
        settings.console_oidc_tenant,
        settings.console_oidc_client_id or "",
        secret.get_secret_value(),
    )


async def start(request: Request) -> Response:
    """On to Microsoft's sign-in page, with a fresh state, nonce and PKCE pair."""
    state = app_state(request)  # no session needed to start one
    creds = _creds(state.settings)
    verifier, challenge = pkce_pair()
    state_value, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    pending = {
        "state": state_value,
        "nonce": nonce,
        "verifier": verifier,
        "next": safe_next(request.query_params.get("next")),
        "at": time.time(),
    }
    url = state.providers.identity.sign_in_url(
        creds,
        redirect_uri=state.settings.public_url + CALLBACK,
        state=state_value,
        code_challenge=challenge,
        nonce=nonce,
        login_hint=request.query_params.get("login_hint", "").strip()[:320] or None,
    )
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        state.secrets.encrypt(json.dumps(pending)),
        max_age=STATE_SECONDS,
        path=CALLBACK,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(state.settings),
    )
    return response


def _refused(console: Console, status: int, error: str) -> Response:
    """The sign-in page again, with why (its operator-token form still usable)."""
    response = sign_in_form(console, status=status, error=error)
    response.delete_cookie(STATE_COOKIE, path=CALLBACK)
    return response


def allowed(settings: Settings, claims: dict[str, object]) -> bool:
    """Whether the person of these ID token claims may use the console."""
    names = {
        str(claims.get(name, "")).lower() for name in ("preferred_username", "email", "upn", "oid")
    }
    groups = claims.get("groups")
    if isinstance(groups, list):
        names |= {str(group).lower() for group in groups}
    names.discard("")
    return bool(names & set(settings.console_oidc_allowed or ()))


async def callback(request: Request) -> Response:
    """Back from Microsoft: the code redeemed, the ID token checked, a session started."""
    console = await open_console(request)
    settings = console.state.settings
    creds = _creds(settings)
    _ = console._
    try:
        pending = json.loads(console.state.secrets.decrypt(request.cookies.get(STATE_COOKIE, "")))
    except (SecretBoxError, ValueError):
        pending = None
    query = request.query_params
    if (
        not isinstance(pending, dict)
        or time.time() - float(pending.get("at", 0)) > STATE_SECONDS
        or not hmac.compare_digest(
            str(pending.get("state", "")).encode(),
            query.get("state", "").encode("utf-8", "replace"),
        )
    ):
        return _refused(
            console, 400, _("This sign-in has expired or did not start here; sign in again.")
        )
    if query.get("error"):
        detail = (query.get("error_description") or query["error"])[:300]
        return _refused(console, 401, _("Microsoft refused the sign-in: %(detail)s", detail=detail))
    try:
        token = await console.state.providers.identity.redeem_sign_in(
            creds,
            code=query.get("code", "")[:4096],
            redirect_uri=settings.public_url + CALLBACK,
            code_verifier=str(pending.get("verifier", "")),
        )
        claims = await console.state.providers.identity.verified_id_token(
            creds, token, nonce=str(pending.get("nonce", ""))
        )
    except ProviderError as exc:
        status = 503 if exc.retryable else 401
        return _refused(
            console, status, _("Microsoft refused the sign-in: %(detail)s", detail=str(exc)[:300])
        )
    except ValueError as exc:
        return _refused(
            console, 401, _("Microsoft refused the sign-in: %(detail)s", detail=str(exc))
        )
    who = str(claims.get("preferred_username") or claims.get("email") or claims.get("oid") or "")
    if not allowed(settings, claims):
        return _refused(console, 403, _("%(who)s may not sign in to this console.", who=who or "?"))
    session_id = await sessions.start(
        console.state.db,
        sessions.Lifetime.of(settings),
        subject=f"entra:{claims.get('tid', '')}:{claims.get('oid', '')}",
        name=str(claims.get("name") or who),
    )
    target = safe_next(str(pending.get("next", "")))
    response = console.render("signed_in.html", target=target, who=who)
    set_session_cookie(response, session_id, settings)
    response.delete_cookie(STATE_COOKIE, path=CALLBACK)
    return response


ROUTES = [
    TemplateRoute(START, start, methods=["GET"]),
    TemplateRoute(CALLBACK, callback, methods=["GET"]),
]
