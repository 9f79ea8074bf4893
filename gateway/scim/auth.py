"""Authenticating a SCIM request: the account's bearer token, then its rate limit."""

from __future__ import annotations

from starlette.requests import Request

from gateway.accounts import tenant_url
from gateway.scim import repository as repo
from gateway.scim.service import Tenant
from gateway.security import token_matches
from gateway.web.auth import WrongToken, client_key, presented_bearer, token_check
from gateway.web.errors import RateLimited, Unauthorized
from gateway.web.state import AppState

SURFACE = "scim"


async def authenticate(request: Request, state: AppState) -> Tenant:
    """The tenant the request may act on, or 401/429.

    An unknown account and a wrong token get the same answer, so a caller cannot tell
    which accounts exist; a token of one account never opens another. The digest is
    read on every request, so a regenerated or revoked token is refused at once, by
    every worker process. Failures are counted per client and tenant URL (web.auth).
    """
    account_id = request.path_params["account_id"]
    with token_check(state, SURFACE, f"{client_key(request)} {account_id}"):
        token = presented_bearer(request)
        if token is None:
            raise Unauthorized(
                "Missing bearer token: paste the Secret Token generated for this account's "
                "Azure AD Sync integration into Entra's Admin Credentials."
            )
        digest = await state.db.read(repo.credential_digest, account_id)
        if digest is None or not token_matches(token, digest):
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
    return Tenant(account_id, tenant_url(state.settings.public_url, account_id))
