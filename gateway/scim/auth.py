"""Authenticating a SCIM request: the account's bearer token, then its rate limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from starlette.requests import Request

from gateway.accounts import tenant_url
from gateway.scim import repository as repo
from gateway.scim.service import Tenant
from gateway.security import token_matches
from gateway.web.auth import WrongToken, client_key, presented_bearer, token_check
from gateway.web.errors import RateLimited, Unauthorized
from gateway.web.state import AppState
from storage.reads import Guarded, Plan, one_or_none

T = TypeVar("T")

SURFACE = "scim"


async def authenticate(request: Request, state: AppState) -> Tenant:
    """The tenant the request may act on, or 401/429.

    An unknown account and a wrong token get the same answer, so a caller cannot tell
    which accounts exist; a token of one account never opens another. The digest is
    read on every request, so a regenerated or revoked token is refused at once, by
    every worker process. Failures are counted per client and tenant URL (web.auth).
    """
    tenant, _ = await _authenticated(request, state, None)
    return tenant


async def read_authenticated(
    request: Request, state: AppState, read: Callable[[Tenant], Plan[T]]
) -> tuple[Tenant, T]:
    """``authenticate``, and the read plan ``read(tenant)`` in the same trip to the
    database: the digest is read first and ``read`` runs only if the token matches
    (one hop to a reading thread on SQLite instead of two). The account's rate limit is
    taken after the read, so a limited read has cost a read and changed nothing."""
    tenant, result = await _authenticated(request, state, read)
    return tenant, cast(T, result)


async def _authenticated(
    request: Request, state: AppState, read: Callable[[Tenant], Plan[T]] | None
) -> tuple[Tenant, T | None]:
    account_id = request.path_params["account_id"]
    tenant = Tenant(account_id, tenant_url(state.settings.public_url, account_id))
    with token_check(state, SURFACE, f"{client_key(request)} {account_id}"):
        token = presented_bearer(request)
        if token is None:
            raise Unauthorized(
                "Missing bearer token: paste the Secret Token generated for this account's "
                "Azure AD Sync integration into Entra's Admin Credentials."
            )
        allowed, result = await state.db.read(_checked, tenant, token, read)
        if not allowed:
            raise WrongToken(
                "The secret token is not valid for this tenant URL. Keys may have been "
                "regenerated or the Azure AD Sync integration removed: generate keys again "
                "and update both values in Entra."
            )
    wait = await state.rate_limiter.acquire(account_id)
    if wait is not None:
        raise RateLimited(
            f"Too many SCIM requests for this account; retry after {wait} s.", retry_after=wait
        )
    return tenant, result


def _checked(
    tenant: Tenant, token: str, read: Callable[[Tenant], Plan[T]] | None
) -> Plan[tuple[bool, T | None]]:
    """Whether ``token`` is the account's, then (only if it is) ``read``'s result.

    The digest and ``read``'s first statement go together (``Guarded``: one statement on
    PostgreSQL, the search joined to the digest's row); ``read`` goes on only once the
    token matched."""
    credential = repo.credential_read(tenant.account_id)
    if read is None:
        return _matches(token, one_or_none((yield credential))), None
    plan = read(tenant)
    try:
        first = next(plan)
    except Exception as exc:  # it needed no statement, or a bad request (401 before 400)
        if not _matches(token, one_or_none((yield credential))):
            return False, None
        if isinstance(exc, StopIteration):
            return True, exc.value
        raise
    if isinstance(first, Guarded):  # guarded already: the token alone first
        if not _matches(token, one_or_none((yield credential))):
            return False, None
        rows = yield first
    else:
        row, rows = yield Guarded(credential, first)
        if not _matches(token, row):
            plan.close()
            return False, None
    try:
        step = plan.send(rows)
        while True:
            step = plan.send((yield step))
    except StopIteration as done:
        return True, done.value


def _matches(token: str, row: Any) -> bool:
    """Whether ``token`` is the one whose digest ``row`` holds (None: no credential)."""
    return row is not None and token_matches(token, str(row[0]))
