"""The Microsoft identity platform (OAuth 2.0 v2 endpoints): app tokens, monitors' tokens,
admin consent, signing keys.

Three grants, all form posts to ``{login}/{tenant}/oauth2/v2.0/token``: client credentials
for the app's own calls (setPresence, reading presence), the authorization code with PKCE
to sign a presence monitor in, and the refresh token to keep it signed in (each refresh
answers a new refresh token, which replaces the old one). Written over the process's
aiohttp client rather than with MSAL, whose HTTP calls block (requests) and would need a
thread per token call (decision 0013).

App tokens are cached until shortly before they expire, one fetch at a time per app, so
a burst of presence writes asks for one token, not hundreds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jwt
import orjson

from gateway.clients.http import KIB, HttpClient, ProviderError, Reply, request, with_retries

GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
# What a presence monitor is asked for: a refresh token (offline_access), who it is
# (openid, profile, email), and the delegated permission presence subscriptions need.
MONITOR_SCOPES = (
    "openid",
    "profile",
    "email",
    "offline_access",
    "https://graph.microsoft.com/Presence.Read.All",
    "https://graph.microsoft.com/User.Read.All",
)
# What a person signing in to the console is asked for: who they are, nothing more.
SIGN_IN_SCOPES = ("openid", "profile", "email")
# Errors after which a monitor's refresh token will never work again: it must sign in anew.
SIGNED_OUT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required"})
# An app token is renewed this long before it expires (Microsoft's tokens last ~1 hour).
TOKEN_MARGIN = 300.0
# A token answer holds up to three JWTs (access, ID, refresh), each at most some 16 KB
# with many roles or groups (past 200 groups a token carries an overage claim instead);
# the signing keys are a handful of JWKs with a 2 KB certificate each. Five times that.
ANSWER_LIMIT = 256 * KIB


@dataclass(frozen=True)
class AppCredentials:
    """A tenant's app registration: tenant id, client id and a client secret (never logged)."""

    tenant_id: str
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it stops working (``time.time()`` seconds)."""

    token: str
    expires_at: float


@dataclass(frozen=True)
class UserTokens:
    """A signed-in user's tokens: the access token, the refresh token that replaces the
    stored one, and who signed in (from the ID token's claims, not verified: they come
    straight from the token endpoint over TLS)."""

    access: AccessToken
    refresh_token: str | None
    upn: str | None
    object_id: str | None
    tenant_id: str | None


@dataclass
class IdentityError(ProviderError):
    """The identity platform refused a grant; ``error`` is its OAuth error code."""

    error: str | None = None

    @property
    def signed_out(self) -> bool:
        """The user's grant is gone (revoked, expired, consent withdrawn): sign in again."""
        return self.error in SIGNED_OUT_ERRORS

    @property
    def bad_client(self) -> bool:
        """The app's client id or secret is wrong or expired."""
        return self.error in {"invalid_client", "unauthorized_client"}


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)[:96]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def unverified_claims(jwt: str | None) -> dict[str, Any]:
    """The payload of a JWT read without verification: for tokens that came straight from
    the token endpoint over TLS (see ``UserTokens``)."""
    if not jwt or jwt.count(".") != 2:
        return {}
    payload = jwt.split(".")[1]
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = orjson.loads(decoded)
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _error(reply: Reply, what: str) -> IdentityError:
    try:
        body = reply.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    error = str(body.get("error") or "") or None
    description = str(body.get("error_description") or reply.reason)
    # The first line names the AADSTS code and what is wrong; the rest is trace ids.
    summary = description.splitlines()[0] if description else reply.reason
    return IdentityError(
        f"{what}: the identity platform answered {reply.status} {error or ''}: {summary}",
        retryable=False,
        status=reply.status,
        code=error,
        error=error,
    )


# Seconds a refresh's answer is waited for (see ``IdentityPlatform.refresh``).
REFRESH_TIMEOUT = 60.0


class IdentityPlatform:
    """The identity platform at ``login_url`` (``GATEWAY_LOGIN_URL``)."""

    def __init__(self, http: HttpClient, login_url: str) -> None:
        self._http = http
        self.login_url = login_url.rstrip("/")
        self._app_tokens: dict[tuple[str, str, str], AccessToken] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._keys: dict[str, tuple[float, dict[str, Any]]] = {}

    def _endpoint(self, tenant: str, path: str) -> str:
        return f"{self.login_url}/{quote(tenant, safe='')}{path}"

    async def _token(
        self,
        tenant: str,
        form: dict[str, str],
        what: str,
        *,
        attempts: int = 3,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        async def call() -> Reply:
            return await request(
                self._http,
                "POST",
                self._endpoint(tenant, "/oauth2/v2.0/token"),
                what=what,
                form=form,
                timeout=timeout,
                limit=ANSWER_LIMIT,
            )

        reply = await with_retries(call, attempts=attempts)
        if reply.status != 200:
            raise _error(reply, what)
        try:
            body = reply.json()
        except ValueError as exc:
            raise ProviderError(f"{what}: the answer is not JSON", retryable=True) from exc
        if not isinstance(body, dict) or not body.get("access_token"):
            raise ProviderError(f"{what}: the answer has no access_token", retryable=True)
        return body

    async def app_token(self, creds: AppCredentials, *, fresh: bool = False) -> AccessToken:
        """An app-only token for Graph by client credentials, cached until near expiry."""
        key = (
            creds.tenant_id,
            creds.client_id,
            hashlib.sha256(creds.client_secret.encode()).hexdigest(),
        )
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._app_tokens.get(key)
            if cached is not None and not fresh and cached.expires_at - TOKEN_MARGIN > time.time():
                return cached
            body = await self._token(
                creds.tenant_id,
                {
                    "grant_type": "client_credentials",
                    "client_id": creds.client_id,
                    "client_secret": creds.client_secret,
                    "scope": GRAPH_DEFAULT_SCOPE,
                },
                "app token",
            )
            token = AccessToken(
                str(body["access_token"]), time.time() + float(body.get("expires_in", 3599))
            )
            self._app_tokens[key] = token
            return token

    def forget_app_token(self, creds: AppCredentials) -> None:
        """Drop a cached app token (Graph refused it: the secret changed or was revoked)."""
        key = (
            creds.tenant_id,
            creds.client_id,
            hashlib.sha256(creds.client_secret.encode()).hexdigest(),
        )
        self._app_tokens.pop(key, None)

    def authorize_url(
        self,
        creds: AppCredentials,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        login_hint: str,
    ) -> str:
        """Where a monitor signs in (authorization code with PKCE, the monitor's UPN as hint)."""
        return self._authorize(
            creds,
            redirect_uri,
            state,
            code_challenge,
            MONITOR_SCOPES,
            login_hint=login_hint,
            prompt="select_account",
        )

    def sign_in_url(
        self,
        creds: AppCredentials,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        nonce: str,
        login_hint: str | None,
    ) -> str:
        """Where a person signs in to the gateway's own pages (OpenID Connect: authorization
        code with PKCE, an ID token bound to ``nonce``)."""
        extra = {"nonce": nonce, **({"login_hint": login_hint} if login_hint else {})}
        return self._authorize(creds, redirect_uri, state, code_challenge, SIGN_IN_SCOPES, **extra)

    def _authorize(
        self,
        creds: AppCredentials,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        scopes: tuple[str, ...],
        **extra: str,
    ) -> str:
        """The authorize endpoint's URL for a code with PKCE, answered in the query."""
        query = urlencode(
            {
                "client_id": creds.client_id,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "response_mode": "query",
                "scope": " ".join(scopes),
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
                **extra,
            }
        )
        return self._endpoint(creds.tenant_id, "/oauth2/v2.0/authorize") + "?" + query

    async def redeem_sign_in(
        self, creds: AppCredentials, *, code: str, redirect_uri: str, code_verifier: str
    ) -> str:
        """The ID token of a person who just signed in (not yet verified); a code is
        good once, so it is never sent twice."""
        body = await self._code_grant(
            creds, code, redirect_uri, code_verifier, SIGN_IN_SCOPES, attempts=1
        )
        token = body.get("id_token")
        if not isinstance(token, str) or not token:
            raise ProviderError("sign-in: the answer has no id_token", retryable=False)
        return token

    async def verified_id_token(
        self, creds: AppCredentials, token: str, *, nonce: str
    ) -> dict[str, Any]:
        """The claims of an ID token the tenant issued to this app for this sign-in: its
        signature checked against the tenant's keys (fetched again once for an unknown
        key id), its audience, issuer, expiry and nonce. ValueError otherwise."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise ValueError(f"the ID token is malformed: {exc}") from exc
        keys = await self.signing_keys(creds.tenant_id)
        if not any(key.get("kid") == kid for key in keys.get("keys", [])):
            keys = await self.signing_keys(creds.tenant_id, fresh=True)
        found = next((key for key in keys.get("keys", []) if key.get("kid") == kid), None)
        if found is None:
            raise ValueError("the ID token is signed by a key the tenant does not publish")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                jwt.PyJWK(found).key,
                algorithms=["RS256"],
                audience=creds.client_id,
                issuer=f"https://login.microsoftonline.com/{creds.tenant_id}/v2.0",
                options={"require": ["aud", "iss", "exp", "iat"]},
                leeway=120,
            )
        except jwt.PyJWTError as exc:
            raise ValueError(f"the ID token is not valid: {exc}") from exc
        if claims.get("nonce") != nonce:
            raise ValueError("the ID token was not issued for this sign-in (nonce)")
        return claims

    def admin_consent_url(
        self, *, tenant: str, client_id: str, redirect_uri: str, state: str
    ) -> str:
        """Where an Azure admin grants the app's permissions for the whole organization."""
        query = urlencode(
            {
                "client_id": client_id,
                "scope": GRAPH_DEFAULT_SCOPE,
                "redirect_uri": redirect_uri,
                "state": state,
            }
        )
        return self._endpoint(tenant, "/v2.0/adminconsent") + "?" + query

    def _user_tokens(self, body: dict[str, Any]) -> UserTokens:
        claims = unverified_claims(body.get("id_token")) or unverified_claims(
            body.get("access_token")
        )
        upn = claims.get("preferred_username") or claims.get("upn")
        try:
            lifetime = float(body.get("expires_in", 3599))
        except (TypeError, ValueError):
            raise ProviderError(
                "the token answer's expires_in is not a number", retryable=True
            ) from None
        return UserTokens(
            access=AccessToken(str(body["access_token"]), time.time() + lifetime),
            refresh_token=body.get("refresh_token") or None,
            upn=str(upn) if upn else None,
            object_id=str(claims["oid"]) if claims.get("oid") else None,
            tenant_id=str(claims["tid"]) if claims.get("tid") else None,
        )

    async def redeem_code(
        self, creds: AppCredentials, *, code: str, redirect_uri: str, code_verifier: str
    ) -> UserTokens:
        """Tokens for the monitor that just signed in."""
        body = await self._code_grant(creds, code, redirect_uri, code_verifier, MONITOR_SCOPES)
        return self._user_tokens(body)

    async def _code_grant(
        self,
        creds: AppCredentials,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        scopes: tuple[str, ...],
        *,
        attempts: int = 3,
    ) -> dict[str, Any]:
        """The token answer for an authorization code with its PKCE verifier."""
        return await self._token(
            creds.tenant_id,
            {
                "grant_type": "authorization_code",
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
                "scope": " ".join(scopes),
            },
            "sign-in",
            attempts=attempts,
        )

    async def refresh(self, creds: AppCredentials, refresh_token: str) -> UserTokens:
        """New tokens for a monitor; the answer's refresh token replaces the stored one."""
        body = await self._token(
            creds.tenant_id,
            {
                "grant_type": "refresh_token",
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
                "refresh_token": refresh_token,
                "scope": " ".join(MONITOR_SCOPES),
            },
            "token refresh",
            # Never repeated blindly: a refresh the platform processed spent the old token,
            # and a repeat of it would be refused as reused. For the same reason its answer
            # is waited for longer than other calls': given up on, a new refresh token the
            # platform issued is lost, and the monitor must be signed in again.
            attempts=1,
            timeout=max(REFRESH_TIMEOUT, self._http.timeout.total or 0.0),
        )
        return self._user_tokens(body)

    async def signing_keys(self, tenant: str, *, fresh: bool = False) -> dict[str, Any]:
        """The identity platform's token signing keys (JWKS), cached for an hour."""
        cached = self._keys.get(tenant)
        if cached is not None and not fresh and cached[0] > time.time():
            return cached[1]

        async def call() -> Reply:
            return await request(
                self._http,
                "GET",
                self._endpoint(tenant, "/discovery/v2.0/keys"),
                what="signing keys",
                limit=ANSWER_LIMIT,
            )

        reply = await with_retries(call)
        if reply.status != 200:
            raise _error(reply, "signing keys")
        keys = reply.json()
        if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
            raise ProviderError("signing keys: not a JWKS document", retryable=True)
        self._keys[tenant] = (time.time() + 3600, keys)
        return keys
