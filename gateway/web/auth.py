"""Bearer tokens as sent, the operator token, and slowing clients that keep failing.

A presented token is the exact bytes after ``Bearer`` and its separating spaces: no
other trimming, no folding. Trimming once turned ``Bearer <U+00A0>`` into the empty
string, which equalled an empty configured token. Only the scheme name is
case-insensitive (RFC 9110, 11.1).

Every surface that checks a secret of its callers counts the wrong tokens each client
presents in one limiter: after ``GATEWAY_AUTH_FAILURE_BURST`` of them a client waits
(``429`` with ``Retry-After``) before it may try again, whether or not its next token is
right, so that guessing gains nothing from speed. A request without a token guesses
nothing and is not counted. A surface scopes its key (SCIM: per account),
so that one tenant's stale token sent from Microsoft's shared addresses never blocks
another tenant.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import Request

from gateway.settings import Settings
from gateway.web.errors import RateLimited, Unauthorized
from gateway.web.ratelimit import RateLimiter
from gateway.web.state import AppState, app_state

# Clients remembered at most (least recently seen forgotten first).
FAILURE_CLIENTS = 10_000
ADMIN = "admin"


def failure_limiter(settings: Settings) -> RateLimiter:
    """The limiter of wrong tokens of one process (GATEWAY_AUTH_FAILURE_BURST, _SECONDS)."""
    burst = settings.auth_failure_burst
    rate = 1 / settings.auth_failure_seconds if burst else 0.0
    return RateLimiter(rate, burst, max_keys=FAILURE_CLIENTS)


def client_key(request: Request) -> str:
    """Who is calling, for counting failures: the peer address (the client's own behind
    a proxy uvicorn trusts). IPv6 clients are counted by /64, the block one host gets."""
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def presented_bearer(request: Request) -> bytes | None:
    """The token of an ``Authorization: Bearer`` header, as the bytes sent; None if absent."""
    scheme, _, rest = request.headers.get("authorization", "").partition(" ")
    if not scheme.isascii() or scheme.lower() != "bearer":
        return None
    # Starlette decodes header values as latin-1: encoding back gives the bytes sent.
    token = rest.lstrip(" ").encode("latin-1")
    return token or None


class Guess(Exception):
    """Marks the refusal of a wrong token or secret: ``token_check`` counts it against the
    client that sent it."""


class WrongToken(Unauthorized, Guess):
    """A bearer token was presented and is not the right one (401)."""


@contextmanager
def token_check(state: AppState, surface: str, key: str) -> Iterator[None]:
    """Check a client's token inside this block; a client out of allowance gets ``429``
    with ``Retry-After`` whatever its token.

    A ``Guess`` raised in the block spends one try of the client's allowance and is
    counted. Whether the client may still be answered is decided again when its answer
    is: a check waits on the database, and guesses sent all at once would otherwise all
    be answered by what they guessed. Past the allowance, a wrong token and a right one
    get the same 429, so nothing is learnt from them. A client that sends only right
    tokens spends nothing and is never held back, however many it sends at once.
    """
    limiter = state.auth_failures
    counted = f"{surface} {key}"
    _hold_back(state, surface, limiter.blocked(counted))
    try:
        yield
    except Guess:
        _hold_back(state, surface, limiter.acquire(counted))
        state.metrics.auth_failures.labels(surface, "refused").inc()
        raise
    _hold_back(state, surface, limiter.blocked(counted))


def _hold_back(state: AppState, surface: str, wait: int | None) -> None:
    if wait is not None:
        state.metrics.auth_failures.labels(surface, "throttled").inc()
        raise RateLimited(
            f"Too many wrong tokens from this client; retry after {wait} s with the right token.",
            retry_after=wait,
        )


def require_operator(request: Request) -> AppState:
    """The app state, once the operator token is checked (401 with what to do otherwise)."""
    state = app_state(request)
    expected = state.settings.admin_token
    if expected is None:
        raise Unauthorized(
            "The admin API is disabled: set GATEWAY_ADMIN_TOKEN and restart the gateway."
        )
    with token_check(state, ADMIN, client_key(request)):
        presented = presented_bearer(request)
        if presented is None:
            raise Unauthorized("Send the operator token as 'Authorization: Bearer <token>'.")
        if not hmac.compare_digest(presented, expected.get_secret_value().encode("utf-8")):
            raise WrongToken("The operator token is not valid.")
    return state
