"""A fake of Microsoft's cloud as the gateway sees it: the identity platform and Graph.

The gateway has two base URLs, ``GATEWAY_LOGIN_URL`` (``/{tenant}/oauth2/v2.0/token``,
``/authorize``, ``/{tenant}/v2.0/adminconsent``, ``/{tenant}/discovery/v2.0/keys``) and
``GATEWAY_GRAPH_API_URL`` (``/v1.0/...``). Both point at one ``FakeMicrosoft``: a single
Starlette app serves both path families, sharing one directory (tenants, apps, users) and
one signing key set, so Graph only accepts tokens this identity platform issued.

The rules each side enforces are listed in ``tests.fakes.microsoft_identity`` and
``tests.fakes.microsoft_graph``. This module adds what the test scripts: the directory, the
users' own Teams presence, scripted failures (``login_faults``, ``graph_faults``: consulted
before any route, for every request of that family), and what happened (``requests``,
``tokens_issued``, ``notifications_sent``, ...).

Pushes run on a thread of the fake's own: ``close()`` it (or use the fake as a context
manager) when the test is done.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes.loopback import Faults
from tests.fakes.microsoft_graph import FakeGraph, graph_fault_response
from tests.fakes.microsoft_identity import (
    DEFAULT_APPLICATION_PERMISSIONS,
    DEFAULT_DELEGATED_PERMISSIONS,
    Directory,
    DirectoryUser,
    FakeIdentity,
    Tenant,
    login_fault_response,
    new_app,
)


class _Front:
    """Records every request and answers the scripted failures before any route runs."""

    def __init__(self, app: ASGIApp, fake: FakeMicrosoft) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            self.fake.requests.append((scope["method"], path))
            graph = path.startswith("/v1.0/")
            fault = (self.fake.graph_faults if graph else self.fake.login_faults).take()
            if fault is not None:
                response = graph_fault_response(fault) if graph else login_fault_response(fault)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class FakeMicrosoft:
    """The identity platform and Graph (presence, ``$batch``, subscriptions), in memory.

    ``max_subscription_minutes`` below 60 makes Graph grant shorter subscriptions than asked;
    ``presence_window``/``presence_budget`` are the presence rate limit (Graph: 30 s, 1,500);
    ``available_fade`` is when an Available session starts to fade (Graph: 5 minutes);
    ``notification_*`` and ``slow_notification`` shape deliveries (see FakeGraph).
    """

    def __init__(
        self,
        *,
        max_subscription_minutes: float = 60,
        notification_timeout: float = 10.0,
        presence_window: float = 30.0,
        presence_budget: int = 1500,
        available_fade: float = 300.0,
        notification_batch_window: float = 0.05,
        notification_attempts: int = 3,
        notification_retry_delays: tuple[float, ...] = (0.5, 1.5),
        slow_notification: float = 3.0,
        shuffle_batch_responses: bool = True,
    ) -> None:
        self.directory = Directory()
        self.identity = FakeIdentity(self.directory)
        self.graph = FakeGraph(
            self.directory,
            max_subscription_minutes=max_subscription_minutes,
            notification_timeout=notification_timeout,
            presence_window=presence_window,
            presence_budget=presence_budget,
            available_fade=available_fade,
            notification_batch_window=notification_batch_window,
            notification_attempts=notification_attempts,
            notification_retry_delays=notification_retry_delays,
            slow_notification=slow_notification,
            shuffle_batch_responses=shuffle_batch_responses,
        )
        self.graph_faults = Faults()
        self.login_faults = Faults()
        self.requests: list[tuple[str, str]] = []
        self.base_url: str | None = None
        # Graph's route first: "/v1.0/..." would otherwise read as a tenant named "v1.0".
        self.app = Starlette(
            routes=[*self.graph.routes, *self.identity.routes],
            middleware=[Middleware(_Front, fake=self)],
        )

    def __enter__(self) -> FakeMicrosoft:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the notification thread (undelivered notifications are dropped)."""
        self.graph.engine.close()

    # The directory

    def add_tenant(self, tenant_id: str) -> None:
        """A new directory (its admin grants consent unless ``set_admin_consent`` says no)."""
        with self.directory.lock:
            self.directory.tenants.setdefault(tenant_id, Tenant(tenant_id))

    def add_app(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        secret_expires: datetime | None = None,
        application_permissions: Iterable[str] = DEFAULT_APPLICATION_PERMISSIONS,
        delegated_permissions: Iterable[str] = DEFAULT_DELEGATED_PERMISSIONS,
        redirect_uris: Iterable[str] = (),
    ) -> None:
        """Register an app in the tenant, with admin-consented permissions.

        ``redirect_uris`` empty accepts any redirect URI; otherwise only those.
        """
        app = new_app(
            tenant_id,
            client_id,
            client_secret,
            secret_expires=secret_expires,
            application_permissions=application_permissions,
            delegated_permissions=delegated_permissions,
            redirect_uris=redirect_uris,
        )
        with self.directory.lock:
            if tenant_id not in self.directory.tenants:
                raise KeyError(f"no tenant {tenant_id}")
            self.directory.apps[(tenant_id, client_id)] = app

    def add_user(
        self,
        tenant_id: str,
        upn: str,
        *,
        user_id: str | None = None,
        display_name: str | None = None,
        mail: str | None = None,
    ) -> str:
        """A work account in the tenant; returns its Entra object id (a lower-case uuid)."""
        object_id = (user_id or str(uuid.uuid4())).lower()
        with self.directory.lock:
            if tenant_id not in self.directory.tenants:
                raise KeyError(f"no tenant {tenant_id}")
            if object_id in self.directory.users or self.directory.user_by_upn(upn):
                raise ValueError(f"user {upn} ({object_id}) exists")
            self.directory.add(
                DirectoryUser(
                    tenant_id,
                    object_id,
                    upn,
                    display_name or upn.split("@", maxsplit=1)[0].replace(".", " ").title(),
                    upn if mail is None else mail,
                )
            )
        return object_id

    def add_users(self, tenant_id: str, count: int, domain: str = "contoso.com") -> list[str]:
        """``count`` users ``user00001@domain``, ...; their object ids."""
        with self.directory.lock:
            start = len(self.directory.users)
            return [
                self.add_user(tenant_id, f"user{start + index:05d}@{domain}")
                for index in range(1, count + 1)
            ]

    def user(self, id_or_upn: str) -> dict[str, Any]:
        """The user as Graph's ``/users/{id}`` answers it."""
        found = self.directory.users.get(id_or_upn.lower()) or self.directory.user_by_upn(id_or_upn)
        if found is None:
            raise KeyError(id_or_upn)
        return found.resource()

    # Identity scripting

    def deny_sign_in(self, upn: str) -> None:
        """The user may not sign in to the app: authorize answers error=access_denied."""
        with self.directory.lock:
            found = self.directory.user_by_upn(upn)
            if found is None:
                raise KeyError(upn)
            found.sign_in_denied = True

    def set_admin_consent(self, tenant_id: str, outcome: str, description: str = "") -> None:
        """What the tenant's admin answers on the admin consent page: granted or denied."""
        if outcome not in ("granted", "denied"):
            raise ValueError("outcome is 'granted' or 'denied'")
        with self.directory.lock:
            tenant = self.directory.tenants[tenant_id]
            tenant.consent, tenant.consent_description = outcome, description

    def revoke_refresh_tokens(self, upn: str) -> None:
        """Later refreshes of the user's tokens answer invalid_grant (AADSTS50173)."""
        self.identity.revoke_refresh_tokens(upn)

    def expire_refresh_tokens(self, upn: str) -> None:
        """Later refreshes of the user's tokens answer invalid_grant (AADSTS700082)."""
        self.identity.expire_refresh_tokens(upn)

    def rotate_signing_key(self) -> str:
        """Sign with a new key; the old one stays in the JWKS. Returns the new ``kid``."""
        return self.identity.rotate_signing_key()

    def mint_app_token(self, tenant_id: str, client_id: str) -> str:
        """An app token as client credentials would issue it (for tests not about that)."""
        return self.identity.mint_app_token(tenant_id, client_id)

    def mint_user_tokens(
        self, tenant_id: str, client_id: str, upn: str, scope: str | None = None
    ) -> dict[str, Any]:
        """A signed-in user's token answer without the authorize round trip."""
        return self.identity.mint_user_tokens(tenant_id, client_id, upn, scope)

    def jwks(self, tenant: str = "common") -> dict[str, Any]:
        """The published signing keys, as ``/{tenant}/discovery/v2.0/keys`` answers."""
        return self.directory.jwks(tenant)

    @property
    def tokens_issued(self) -> Counter[str]:
        """Tokens issued, by grant type."""
        return self.identity.tokens_issued

    @property
    def consents(self) -> list[dict[str, str]]:
        """Every admin consent answered: tenant, client_id, outcome."""
        return self.identity.consents

    # Presence

    def set_teams_presence(
        self, user_id: str, availability: str, activity: str, *, notify: bool = True
    ) -> None:
        """The user changes presence in their own Teams client; subscriptions are notified
        unless ``notify`` is false (a notification Graph lost)."""
        self.graph.set_teams_presence(user_id, availability, activity, notify=notify)

    def presence(self, user_id: str) -> dict[str, Any]:
        """The presence resource Graph returns for the user now."""
        return self.graph.presence(user_id)

    def sessions(self, user_id: str) -> dict[str, dict[str, Any]]:
        """Live setPresence sessions by sessionId: availability, activity, expires_at."""
        return self.graph.sessions(user_id)

    def preferred_presence(self, user_id: str) -> dict[str, Any] | None:
        """The preferred presence set through setUserPreferredPresence, if any."""
        return self.graph.preferred_presence(user_id)

    @property
    def set_presence_calls(self) -> list[dict[str, Any]]:
        """Every setPresence tried (direct or in a ``$batch``): user_id, body, status."""
        return self.graph.set_presence_calls

    @property
    def batch_items(self) -> list[tuple[str, str]]:
        """(method, url) of every ``$batch`` item received."""
        return self.graph.batch_items

    # Subscriptions and notifications

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every live subscription, as Graph answers it."""
        return self.graph.subscriptions()

    def drop_subscription(self, subscription_id: str) -> None:
        """Graph loses the subscription silently (renew and delete then answer 404)."""
        self.graph.drop_subscription(subscription_id)

    def expire_subscription(self, subscription_id: str) -> None:
        """The subscription reaches its expirationDateTime now."""
        self.graph.expire_subscription(subscription_id)

    async def send_lifecycle(
        self, subscription_id: str, event: str = "reauthorizationRequired"
    ) -> int:
        """POST a lifecycle notification (reauthorizationRequired, subscriptionRemoved,
        missed) to the subscription's lifecycle URL; returns the receiver's status."""
        return await self.graph.send_lifecycle(subscription_id, event)

    def throttle_batch_items(self, count: int, retry_after: str = "1") -> None:
        """The next ``count`` ``$batch`` items answer 429 on their own, with Retry-After."""
        self.graph.throttle_batch_items(count, retry_after)

    @property
    def notifications_sent(self) -> list[dict[str, Any]]:
        """Each notification POST attempt: kind, url, body, status, error, elapsed, ok."""
        return self.graph.engine.sent

    @property
    def validations(self) -> list[dict[str, Any]]:
        """Each validation handshake: url, token, status, ok, elapsed."""
        return self.graph.validations

    @property
    def reauthorizations(self) -> list[str]:
        """Subscription ids reauthorized through ``/subscriptions/{id}/reauthorize``."""
        return self.graph.reauthorizations

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every queued notification was delivered or given up on."""
        self.graph.engine.wait_idle(timeout)

    async def flush(self, timeout: float = 10.0) -> None:
        """``wait_idle`` for async tests, without blocking their event loop."""
        await asyncio.to_thread(self.graph.engine.wait_idle, timeout)
