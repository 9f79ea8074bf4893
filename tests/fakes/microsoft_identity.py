"""A fake of the Microsoft identity platform (Entra ID's OAuth 2.0 v2 endpoints).

The gateway gets three kinds of tokens from it: app tokens (client credentials) to write and
read presence, a presence monitor's tokens (authorization code with PKCE, then refresh
tokens) for presence subscriptions, and it sends admins to the admin consent page. A mock
would hand out tokens to anyone; this fake applies Entra's rules so that a gateway mistake
fails here as in production:

* The token endpoint takes form posts only (JSON is answered like Entra does: the
  ``grant_type`` parameter is "missing"). Errors carry Entra's JSON, ``AADSTS`` codes and
  trace ids: unknown tenant 90002, unknown client 700016, missing secret 7000218 (401), wrong
  secret 7000215 (401), expired secret 7000222 (401), client-credentials scope other than
  ``https://graph.microsoft.com/.default`` 1002012.
* Authorization codes are single use (54005 when reused), live 10 minutes (70008), are bound
  to the client, tenant and ``redirect_uri`` of the authorize request (500112 on mismatch),
  and to its PKCE ``code_challenge`` (S256 only; a verifier that does not match is 501481).
* Refresh tokens rotate: each refresh answers a new one and the presented one stops working
  (70000), from the moment it is redeemed: ``refresh_latency`` seconds may pass before the
  answer leaves, as over a slow network, and an app that stops waiting has lost the old
  token. ``revoke_refresh_tokens`` makes a user's tokens fail with 50173,
  ``expire_refresh_tokens`` with 700082. A refresh token only works for its client and tenant.
  A refresh token is only issued when ``offline_access`` was granted, an ID token only with
  ``openid``.
* The authorize endpoint has no browser: it signs the ``login_hint`` user in at once. What
  Entra shows on its own page (unknown client, redirect URI not registered: 50011) is a 400
  page here, never a redirect; what Entra sends back to the app (user unknown 50034, in
  another tenant 50020, blocked 50105, scopes never consented 65001) is a 302 with
  ``error`` and ``error_description``.
* Admin consent redirects back with ``admin_consent=True`` and, when the tenant's admin
  declines (``set_admin_consent(tenant, "denied")``), ``error=access_denied`` as well.
* Tokens are RS256 JWTs signed by the fake's key, published with its certificate in the JWKS
  at ``/{tenant}/discovery/v2.0/keys``; ``rotate_signing_key`` signs with a new key while the
  old one stays published, as Entra does during a key rollover.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import Fault

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_DEFAULT_SCOPE = f"{GRAPH_RESOURCE}/.default"
GRAPH_NOTIFICATIONS_APP_ID = "0bf30f3b-4a52-48df-9a82-234910c4a086"
"""``appid`` of the validation tokens in rich notifications: Graph's change notification app."""
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
MULTI_TENANT = frozenset({"common", "organizations"})
ACCESS_TOKEN_SECONDS = 3599
CODE_SECONDS = 600
DEFAULT_APPLICATION_PERMISSIONS = ("User.Read.All", "Presence.ReadWrite.All")
DEFAULT_DELEGATED_PERMISSIONS = (
    "Presence.Read.All",
    "User.Read.All",
    "offline_access",
    "openid",
    "profile",
    "email",
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of a PKCE ``code_verifier`` (RFC 7636)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True)
class SigningKey:
    """One of the fake's token signing keys, with the self-signed certificate Entra publishes."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate_der: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        """A new 2048-bit key; its ``kid`` is the certificate's ``x5t``, as Entra's are."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.test")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        thumbprint = _b64url(hashlib.sha1(der).digest())
        return cls(thumbprint, key, der)

    def jwk(self, tenant: str) -> dict[str, Any]:
        """The key as the JWKS lists it."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "x5c": [base64.b64encode(self.certificate_der).decode("ascii")],
            "issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
        }


@dataclass
class Tenant:
    """A directory; ``consent`` is what its admin answers on the admin consent page."""

    id: str
    consent: str = "granted"
    consent_description: str = ""


@dataclass
class AppRegistration:
    """An app registered (with a service principal) in one tenant."""

    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    secret_expires: datetime | None
    application_permissions: frozenset[str]
    delegated_permissions: frozenset[str]
    redirect_uris: tuple[str, ...]
    service_principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class DirectoryUser:
    """A work account: its Entra object id, UPN and whether sign-in is blocked."""

    tenant_id: str
    id: str
    upn: str
    display_name: str
    mail: str | None
    sign_in_denied: bool = False

    def resource(self) -> dict[str, Any]:
        """The user as Graph's ``/users/{id}`` answers it."""
        return {
            "id": self.id,
            "userPrincipalName": self.upn,
            "mail": self.mail,
            "displayName": self.display_name,
        }


@dataclass
class AuthorizationCode:
    """What a sign-in granted, waiting to be redeemed once."""

    tenant_id: str
    client_id: str
    user_id: str
    redirect_uri: str
    code_challenge: str | None
    graph_scopes: frozenset[str]
    oidc_scopes: frozenset[str]
    nonce: str | None
    issued: float = field(default_factory=time.monotonic)
    redeemed: bool = False


@dataclass
class RefreshGrant:
    """The grant behind one refresh token; ``state`` is active, used, revoked or expired."""

    tenant_id: str
    client_id: str
    user_id: str
    graph_scopes: frozenset[str]
    oidc_scopes: frozenset[str]
    state: str = "active"


class EntraError(Exception):
    """An OAuth error answered in Entra's JSON shape (``AADSTS`` code, trace ids)."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.status = status
        self.error = error
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        """The response Entra gives for this error."""
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        description = (
            f"AADSTS{self.code}: {self.message}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
        )
        body = {
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return JSONResponse(body, status_code=self.status)


class ConsentPageError(Exception):
    """An error Entra shows on its own page: the app's redirect URI cannot be trusted."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.code = code

    def response(self) -> HTMLResponse:
        """Entra's error page, reduced to its message."""
        return HTMLResponse(
            f"<html><body><h1>Sorry, but we're having trouble signing you in.</h1>"
            f"<p>{self}</p></body></html>",
            status_code=400,
        )


def login_fault_response(fault: Fault) -> Response:
    """A scripted failure of the identity platform, in Entra's JSON shape."""
    if fault.status == 429:
        error = EntraError(429, "temporarily_unavailable", 50196, "The server is busy.")
    else:
        error = EntraError(fault.status, "temporarily_unavailable", 90033, "Server error.")
    response = error.response()
    response.headers.update(fault.headers())
    return response


class Directory:
    """Tenants, apps, users and signing keys: what the identity platform and Graph share.

    Thread-safe through ``lock``: a test scripts the directory on its thread while the fake
    serves on uvicorn's.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[tuple[str, str], AppRegistration] = {}
        self.users: dict[str, DirectoryUser] = {}
        # The same users by lower-case UPN: a tenant of 100,000 users is looked up often.
        self.by_upn: dict[str, DirectoryUser] = {}
        self.keys: list[SigningKey] = [SigningKey.generate()]

    def add(self, user: DirectoryUser) -> None:
        """Add a user (its id and UPN must be new)."""
        with self.lock:
            self.users[user.id] = user
            self.by_upn[user.upn.lower()] = user

    def user(self, tenant_id: str, id_or_upn: str) -> DirectoryUser | None:
        """The tenant's user with this object id or UPN (UPNs compare case-insensitively)."""
        with self.lock:
            user = self.users.get(id_or_upn.lower()) or self.by_upn.get(id_or_upn.lower())
            return user if user is not None and user.tenant_id == tenant_id else None

    def user_by_upn(self, upn: str) -> DirectoryUser | None:
        """The user with this UPN in any tenant."""
        with self.lock:
            return self.by_upn.get(upn.lower())

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An RS256 JWT of ``claims`` by the current signing key (``kid`` and ``x5t`` set)."""
        with self.lock:
            key = self.keys[-1]
        headers = {"typ": "JWT", "kid": key.kid, "x5t": key.kid}
        return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=headers)

    def public_key(self, kid: object) -> rsa.RSAPublicKey | None:
        """The published key with this ``kid``, if any."""
        with self.lock:
            for key in self.keys:
                if key.kid == kid:
                    return key.private_key.public_key()
        return None

    def jwks(self, tenant: str) -> dict[str, Any]:
        """Every published signing key (the current one and those rotated out)."""
        with self.lock:
            return {"keys": [key.jwk(tenant) for key in reversed(self.keys)]}


def _scope_names(scope: str) -> tuple[frozenset[str], frozenset[str], list[str]]:
    """(Graph permission names, OpenID scopes, scopes of other resources) of a scope string.

    ``https://graph.microsoft.com/Presence.Read.All`` and bare ``Presence.Read.All`` both
    name a Graph permission; ``.default`` is kept as such for the caller to expand.
    """
    graph: set[str] = set()
    oidc: set[str] = set()
    other: list[str] = []
    for item in scope.split():
        if item in OIDC_SCOPES:
            oidc.add(item)
        elif item.lower().startswith(GRAPH_RESOURCE + "/"):
            graph.add(item[len(GRAPH_RESOURCE) + 1 :])
        elif "/" not in item and ":" not in item:
            graph.add(item)
        else:
            other.append(item)
    return frozenset(graph), frozenset(oidc), other


class FakeIdentity:
    """The identity platform's token, authorize, admin consent and keys endpoints.

    State for tests: ``tokens_issued`` (a Counter by grant type), ``consents`` (every admin
    consent answered: tenant, client id, outcome); ``refresh_latency`` delays the answers
    to refresh grants (the tokens are issued first).
    """

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.refresh_latency = 0.0
        self.tokens_issued: Counter[str] = Counter()
        self.consents: list[dict[str, str]] = []
        self._codes: dict[str, AuthorizationCode] = {}
        self._refresh: dict[str, RefreshGrant] = {}
        self.routes = [
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/authorize", self._authorize, methods=["GET"]),
            Route("/{tenant}/v2.0/adminconsent", self._admin_consent, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", self._keys, methods=["GET"]),
            Route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                self._openid_configuration,
                methods=["GET"],
            ),
        ]

    # Scripting

    def revoke_refresh_tokens(self, upn: str) -> None:
        """Revoke every refresh token of the user (as "revoke sessions" in Entra does)."""
        self._end_grants(upn, "revoked")

    def expire_refresh_tokens(self, upn: str) -> None:
        """Make every refresh token of the user expire (90 days unused, in Entra)."""
        self._end_grants(upn, "expired")

    def _end_grants(self, upn: str, state: str) -> None:
        user = self.directory.user_by_upn(upn)
        if user is None:
            raise KeyError(upn)
        with self.directory.lock:
            for grant in self._refresh.values():
                if grant.user_id == user.id and grant.state == "active":
                    grant.state = state

    def rotate_signing_key(self) -> str:
        """Sign with a new key from now on; the old ones stay published. Returns the new kid."""
        key = SigningKey.generate()
        with self.directory.lock:
            self.directory.keys.append(key)
        return key.kid

    # Shortcuts for tests that are not about signing in

    def mint_app_token(self, tenant_id: str, client_id: str) -> str:
        """The access token client credentials would give the app, without the request."""
        with self.directory.lock:
            return self._app_token(self.directory.apps[(tenant_id, client_id)])

    def mint_user_tokens(
        self, tenant_id: str, client_id: str, upn: str, scope: str | None = None
    ) -> dict[str, Any]:
        """The token answer a sign-in of ``upn`` would give (default: every delegated
        permission of the app), without the authorize round trip."""
        with self.directory.lock:
            app = self.directory.apps[(tenant_id, client_id)]
            user = self.directory.user(tenant_id, upn)
            if user is None:
                raise KeyError(upn)
            graph, oidc, _ = _scope_names(scope or " ".join(app.delegated_permissions))
            return self._user_tokens(app, user.id, graph, oidc, None)

    # Token endpoint

    async def _token(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(body)) if content_type == "application/x-www-form-urlencoded" else {}
        tenant = request.path_params["tenant"]
        try:
            grant_type = _required(form, "grant_type")
            with self.directory.lock:
                answer = self._grant(grant_type, tenant, form, request)
            self.tokens_issued[grant_type] += 1
        except EntraError as exc:
            return exc.response()
        if grant_type == "refresh_token":
            await asyncio.sleep(self.refresh_latency)
        return JSONResponse(answer, headers={"Cache-Control": "no-store, no-cache"})

    def _grant(
        self, grant_type: str, tenant: str, form: Mapping[str, str], request: Request
    ) -> dict[str, Any]:
        if grant_type == "client_credentials":
            return self._client_credentials(tenant, form, request)
        if grant_type == "authorization_code":
            return self._authorization_code(tenant, form, request)
        if grant_type == "refresh_token":
            return self._refresh_token(tenant, form, request)
        raise EntraError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )

    def _tenant(self, tenant: str) -> Tenant:
        found = self.directory.tenants.get(tenant)
        if found is None:
            raise EntraError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud.",
            )
        return found

    def _client(self, tenant_id: str, form: Mapping[str, str], request: Request) -> AppRegistration:
        """The app authenticated by its secret (form, or HTTP Basic as Entra also accepts)."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except ValueError:
                decoded = ""
            user, _, password = decoded.partition(":")
            client_id, secret = client_id or unquote(user), secret or unquote(password)
        if not client_id:
            raise _missing("client_id")
        app = self.directory.apps.get((tenant_id, client_id))
        if app is None:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant_id}'. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant.",
            )
        if not secret:
            raise EntraError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        if not secrets.compare_digest(secret.encode(), app.client_secret.encode()):
            raise EntraError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                f"is the client secret value, not the client secret ID, for a secret added to "
                f"app '{client_id}'.",
            )
        if app.secret_expires is not None and app.secret_expires <= datetime.now(UTC):
            raise EntraError(
                401,
                "invalid_client",
                7000222,
                f"The provided client secret keys for app '{client_id}' are expired.",
            )
        return app

    def _client_credentials(
        self, tenant: str, form: Mapping[str, str], request: Request
    ) -> dict[str, Any]:
        if tenant in MULTI_TENANT:
            raise EntraError(
                400,
                "invalid_request",
                50059,
                "No tenant-identifying information found in either the request or implied by "
                "any provided credentials.",
            )
        self._tenant(tenant)
        app = self._client(tenant, form, request)
        scope = _required(form, "scope")
        if scope != GRAPH_DEFAULT_SCOPE:
            raise EntraError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        return {
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
            "ext_expires_in": ACCESS_TOKEN_SECONDS,
            "access_token": self._app_token(app),
        }

    def _app_token(self, app: AppRegistration) -> str:
        now = int(time.time())
        claims = {
            "aud": GRAPH_RESOURCE,
            "iss": f"https://sts.windows.net/{app.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_TOKEN_SECONDS,
            "tid": app.tenant_id,
            "appid": app.client_id,
            "azp": app.client_id,
            "oid": app.service_principal_id,
            "sub": app.service_principal_id,
            "roles": sorted(app.application_permissions),
            "idtyp": "app",
            "ver": "1.0",
            "uti": secrets.token_urlsafe(16),
        }
        return self.directory.sign(claims)

    def _authorization_code(
        self, tenant: str, form: Mapping[str, str], request: Request
    ) -> dict[str, Any]:
        code = _required(form, "code")
        grant = self._codes.get(code)
        if grant is None or (tenant not in MULTI_TENANT and tenant != grant.tenant_id):
            raise EntraError(
                400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        app = self._client(grant.tenant_id, form, request)
        if grant.redeemed:
            raise EntraError(
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                "code or use an existing refresh token.",
            )
        if time.monotonic() - grant.issued > CODE_SECONDS:
            raise EntraError(
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to "
                "inactivity. Send a new interactive authorization request for this user and "
                "resource.",
            )
        if app.client_id != grant.client_id:
            raise EntraError(
                400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if form.get("redirect_uri") != grant.redirect_uri:
            raise EntraError(
                400,
                "invalid_grant",
                500112,
                "The reply address does not match the reply address provided when requesting "
                "Authorization code.",
            )
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or pkce_challenge(verifier) != grant.code_challenge:
                raise EntraError(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the "
                    "authorization request.",
                )
        grant.redeemed = True
        return self._user_tokens(
            app, grant.user_id, grant.graph_scopes, grant.oidc_scopes, grant.nonce
        )

    def _refresh_token(
        self, tenant: str, form: Mapping[str, str], request: Request
    ) -> dict[str, Any]:
        token = _required(form, "refresh_token")
        grant = self._refresh.get(token)
        if grant is None or (tenant not in MULTI_TENANT and tenant != grant.tenant_id):
            raise _bad_refresh_token()
        app = self._client(grant.tenant_id, form, request)
        if app.client_id != grant.client_id:
            raise _bad_refresh_token()
        if grant.state == "revoked":
            raise EntraError(
                400,
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password.",
            )
        if grant.state == "expired":
            raise EntraError(
                400,
                "invalid_grant",
                700082,
                "The refresh token has expired due to inactivity. The token was issued on "
                f"{datetime.now(UTC) - timedelta(days=90):%Y-%m-%dT%H:%M:%S}Z and was inactive "
                "for 90.00:00:00.",
            )
        if grant.state != "active":
            raise _bad_refresh_token()
        wanted, _, _ = _scope_names(form.get("scope", ""))
        wanted -= {".default"}
        if not wanted <= grant.graph_scopes:
            raise EntraError(
                400,
                "invalid_grant",
                65001,
                "The user or administrator has not consented to use the application with ID "
                f"'{app.client_id}'. Send an interactive authorization request for this user "
                "and resource.",
            )
        grant.state = "used"
        return self._user_tokens(app, grant.user_id, grant.graph_scopes, grant.oidc_scopes, None)

    def _user_tokens(
        self,
        app: AppRegistration,
        user_id: str,
        graph_scopes: frozenset[str],
        oidc_scopes: frozenset[str],
        nonce: str | None,
    ) -> dict[str, Any]:
        user = self.directory.users[user_id]
        now = int(time.time())
        scp = sorted(graph_scopes) + sorted(oidc_scopes - {"offline_access"})
        access = {
            "aud": GRAPH_RESOURCE,
            "iss": f"https://sts.windows.net/{app.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_TOKEN_SECONDS,
            "tid": app.tenant_id,
            "appid": app.client_id,
            "azp": app.client_id,
            "oid": user.id,
            "sub": secrets.token_urlsafe(32),
            "upn": user.upn,
            "unique_name": user.upn,
            "preferred_username": user.upn,
            "name": user.display_name,
            "scp": " ".join(scp),
            "idtyp": "user",
            "ver": "1.0",
            "uti": secrets.token_urlsafe(16),
        }
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(
                [f"{GRAPH_RESOURCE}/{name}" for name in sorted(graph_scopes)]
                + sorted(oidc_scopes - {"offline_access"})
            ),
            "expires_in": ACCESS_TOKEN_SECONDS,
            "ext_expires_in": ACCESS_TOKEN_SECONDS,
            "access_token": self.directory.sign(access),
        }
        if "offline_access" in oidc_scopes:
            refresh = "1.A" + secrets.token_urlsafe(96)
            self._refresh[refresh] = RefreshGrant(
                app.tenant_id, app.client_id, user.id, graph_scopes, oidc_scopes
            )
            answer["refresh_token"] = refresh
        if "openid" in oidc_scopes:
            id_claims: dict[str, Any] = {
                "aud": app.client_id,
                "iss": f"https://login.microsoftonline.com/{app.tenant_id}/v2.0",
                "iat": now,
                "nbf": now,
                "exp": now + ACCESS_TOKEN_SECONDS,
                "tid": app.tenant_id,
                "oid": user.id,
                "sub": access["sub"],
                "preferred_username": user.upn,
                "ver": "2.0",
            }
            if "profile" in oidc_scopes:
                id_claims["name"] = user.display_name
            if "email" in oidc_scopes and user.mail:
                id_claims["email"] = user.mail
            if nonce is not None:
                id_claims["nonce"] = nonce
            answer["id_token"] = self.directory.sign(id_claims)
        return answer

    # Authorize (the sign-in page) and admin consent

    def _registered_app(self, tenant: str, client_id: str | None) -> AppRegistration:
        """The app of an interactive request, or Entra's own error page."""
        if not client_id:
            raise ConsentPageError(
                900144, "The request body must contain the following parameter: 'client_id'."
            )
        with self.directory.lock:
            if tenant in MULTI_TENANT:
                app = next(
                    (a for a in self.directory.apps.values() if a.client_id == client_id), None
                )
            elif tenant not in self.directory.tenants:
                raise ConsentPageError(90002, f"Tenant '{tenant}' not found.")
            else:
                app = self.directory.apps.get((tenant, client_id))
        if app is None:
            raise ConsentPageError(
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'.",
            )
        return app

    @staticmethod
    def _checked_redirect(app: AppRegistration, redirect_uri: str | None) -> str:
        if not redirect_uri:
            raise ConsentPageError(900971, "No reply address provided.")
        if app.redirect_uris and redirect_uri not in app.redirect_uris:
            raise ConsentPageError(
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match "
                f"the redirect URIs configured for the application '{app.client_id}'.",
            )
        return redirect_uri

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        tenant = request.path_params["tenant"]
        try:
            app = self._registered_app(tenant, query.get("client_id"))
            redirect_uri = self._checked_redirect(app, query.get("redirect_uri"))
        except ConsentPageError as exc:
            return exc.response()
        state = query.get("state")

        def fail(error: str, code: int, message: str) -> Response:
            return _redirect(
                redirect_uri,
                {"error": error, "error_description": f"AADSTS{code}: {message}", "state": state},
            )

        if query.get("response_type") != "code":
            return fail(
                "unsupported_response_type",
                700054,
                f"response_type '{query.get('response_type')}' is not enabled for the app.",
            )
        if query.get("response_mode", "query") != "query":
            return fail("invalid_request", 900144, "This fake answers with response_mode=query.")
        challenge = query.get("code_challenge")
        if challenge is not None and query.get("code_challenge_method") != "S256":
            return fail("invalid_request", 501491, "The code_challenge_method must be S256.")
        graph, oidc, other = _scope_names(query.get("scope", ""))
        if other or not (graph or oidc):
            return fail(
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid: {other}.",
            )
        login_hint = query.get("login_hint")
        if not login_hint:
            return fail(
                "interaction_required",
                50058,
                "A silent sign-in request was sent but no user is signed in (the fake signs "
                "in the login_hint user and has no browser to pick one).",
            )
        with self.directory.lock:
            user = self.directory.user_by_upn(login_hint)
            if user is None:
                return fail(
                    "access_denied", 50034, f"The user account {login_hint} does not exist."
                )
            if tenant not in MULTI_TENANT and user.tenant_id != tenant:
                return fail(
                    "access_denied",
                    50020,
                    f"User account '{login_hint}' does not exist in tenant '{tenant}'.",
                )
            app = self.directory.apps.get((user.tenant_id, app.client_id), app)
            if app.tenant_id != user.tenant_id:
                return fail(
                    "consent_required", 65001, "The app is not consented in the user's tenant."
                )
            if user.sign_in_denied:
                return fail(
                    "access_denied",
                    50105,
                    f"Your administrator has configured the application {app.client_id} to "
                    "block users unless they are specifically granted access.",
                )
            if ".default" in graph:
                graph = (graph - {".default"}) | (app.delegated_permissions - OIDC_SCOPES)
            if not (graph | oidc) <= app.delegated_permissions:
                missing = sorted((graph | oidc) - app.delegated_permissions)
                return fail(
                    "consent_required",
                    65001,
                    f"The user or administrator has not consented to use the application with "
                    f"ID '{app.client_id}' for {missing}.",
                )
            code = "0.A" + secrets.token_urlsafe(48)
            self._codes[code] = AuthorizationCode(
                user.tenant_id,
                app.client_id,
                user.id,
                redirect_uri,
                challenge,
                graph,
                oidc,
                query.get("nonce"),
            )
        return _redirect(
            redirect_uri, {"code": code, "state": state, "session_state": str(uuid.uuid4())}
        )

    async def _admin_consent(self, request: Request) -> Response:
        query = request.query_params
        try:
            app = self._registered_app(request.path_params["tenant"], query.get("client_id"))
            redirect_uri = self._checked_redirect(app, query.get("redirect_uri"))
        except ConsentPageError as exc:
            return exc.response()
        state = query.get("state")
        if not query.get("scope"):
            return _redirect(
                redirect_uri,
                {
                    "error": "invalid_request",
                    "error_description": "AADSTS900144: The request body must contain the "
                    "following parameter: 'scope'.",
                    "state": state,
                },
            )
        with self.directory.lock:
            tenant = self.directory.tenants[app.tenant_id]
            outcome, description = tenant.consent, tenant.consent_description
        self.consents.append(
            {"tenant": app.tenant_id, "client_id": app.client_id, "outcome": outcome}
        )
        if outcome == "denied":
            return _redirect(
                redirect_uri,
                {
                    "admin_consent": "True",
                    "error": "access_denied",
                    "error_description": description
                    or "AADSTS65004: User declined to consent to access the app.",
                    "state": state,
                },
            )
        scope = " ".join(f"{GRAPH_RESOURCE}/{name}" for name in sorted(app.application_permissions))
        return _redirect(
            redirect_uri,
            {"admin_consent": "True", "tenant": app.tenant_id, "scope": scope, "state": state},
        )

    # Keys and metadata

    async def _keys(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if tenant not in MULTI_TENANT and tenant not in self.directory.tenants:
            return EntraError(
                400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found."
            ).response()
        return JSONResponse(self.directory.jwks(tenant))

    async def _openid_configuration(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise _missing(name)
    return value


def _missing(name: str) -> EntraError:
    return EntraError(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _bad_refresh_token() -> EntraError:
    return EntraError(
        400,
        "invalid_grant",
        70000,
        "The provided value for the input parameter 'refresh_token' or 'assertion' is not "
        "valid (refresh tokens rotate: one already redeemed does not work again).",
    )


def _redirect(uri: str, params: Mapping[str, str | None]) -> RedirectResponse:
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return RedirectResponse(f"{uri}{'&' if '?' in uri else '?'}{query}", status_code=302)


def new_app(
    tenant_id: str,
    client_id: str,
    client_secret: str,
    *,
    secret_expires: datetime | None,
    application_permissions: Iterable[str],
    delegated_permissions: Iterable[str],
    redirect_uris: Iterable[str],
) -> AppRegistration:
    """An app registration, checked for what Entra itself would refuse to register."""
    if secret_expires is not None and secret_expires.tzinfo is None:
        raise ValueError("secret_expires must be timezone-aware")
    return AppRegistration(
        tenant_id,
        client_id,
        client_secret,
        secret_expires,
        frozenset(application_permissions),
        frozenset(delegated_permissions),
        tuple(redirect_uris),
    )
