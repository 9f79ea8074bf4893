"""Microsoft Graph v1.0: the presence and subscription calls the gateway makes.

Every call carries a bearer token the caller chose: the app's (client credentials) to
read and write presence, a monitor's delegated token for presence subscriptions, which
take delegated permissions only. Throttling (429) and server errors are retried here,
honouring ``Retry-After`` (Graph sends fractional seconds too), a few times within a
bounded wait; past that the failure goes back to the caller, whose job (an outbox row,
a subscription's upkeep) is retried later and survives a restart. ``$batch`` items are
throttled one by one: their answers come back per item for the caller to retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from gateway.clients.http import (
    MIB,
    HttpClient,
    ProviderError,
    Reply,
    Unanswered,
    parse_retry_after,
    request,
    with_retries,
)

API = "/v1.0"
# Graph's limits: ids per getPresencesByUserId call and per subscription; requests per $batch.
MAX_PRESENCE_IDS = 650
MAX_BATCH = 20
# A subscription's create waits for Graph to validate the notification and lifecycle URLs
# (10 s each at most) before it is answered.
SUBSCRIBE_TIMEOUT = 30.0
# One resource or an error: a user, or a subscription, whose resource names up to 650 ids
# (some 30 KB) beside its encryption certificate.
ANSWER_LIMIT = 1 * MIB
# A collection: 650 presences of getPresencesByUserId, each with its status and
# out-of-office messages (a few KB at most, escaped), 20 answers of a ``$batch``, or a page
# of subscriptions, each as large as one above (Graph pages 100).
PAGE_LIMIT = 8 * MIB


@dataclass
class GraphError(ProviderError):
    """Graph refused a call; ``graph_code`` is its error code (``Request_ResourceNotFound``)."""

    graph_code: str | None = None


@dataclass(frozen=True)
class GraphUser:
    """A directory user as far as presence needs it."""

    id: str
    user_principal_name: str
    mail: str | None


@dataclass(frozen=True)
class BatchRequest:
    """One request of a ``$batch`` (``url`` relative to /v1.0)."""

    id: str
    method: str
    url: str
    body: dict[str, Any] | None = None

    def encoded(self) -> dict[str, Any]:
        """The item as Graph takes it: a body needs its Content-Type header."""
        item: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        if self.body is not None:
            item["body"] = self.body
            item["headers"] = {"Content-Type": "application/json"}
        return item


@dataclass(frozen=True)
class BatchResponse:
    """One item's answer: status, ``Retry-After`` when throttled, the body."""

    id: str
    status: int
    retry_after: float | None = None
    body: Any = field(default=None)

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Subscription:
    """A change-notification subscription as Graph answered it."""

    id: str
    expires_at: datetime


def _graph_error(reply: Reply, what: str, *, retryable: bool = False) -> GraphError:
    try:
        body = reply.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "") or None
    message = str(error.get("message") or reply.reason)
    return GraphError(
        f"{what}: Graph answered {reply.status} {code or ''}: {message}",
        retryable=retryable,
        status=reply.status,
        code=code,
        retry_after=parse_retry_after(reply.headers.get("retry-after")),
        graph_code=code,
    )


def parse_graph_time(value: str) -> datetime:
    """A Graph timestamp (ISO 8601 with Z, up to seven fractional digits) as aware UTC."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def graph_time(moment: datetime) -> str:
    """An aware datetime as Graph writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class GraphApi:
    """Microsoft Graph at ``graph_url`` (``GATEWAY_GRAPH_API_URL``)."""

    def __init__(
        self, http: HttpClient, graph_url: str, *, attempts: int = 4, max_wait: float = 30.0
    ) -> None:
        self._http = http
        self.graph_url = graph_url.rstrip("/")
        self.attempts = attempts
        self.max_wait = max_wait

    async def call(
        self,
        token: str,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        ok: Sequence[int] = (200, 201, 202, 204),
        timeout: float | None = None,
        repeatable: bool = True,
        limit: int = ANSWER_LIMIT,
    ) -> Reply:
        """One Graph call, retried on 429 and 5xx within ``max_wait``; other answers not
        in ``ok`` raise ``GraphError``.

        ``repeatable=False``: a call that creates something is not sent again when an
        earlier try got no answer (Graph may have acted on it); the caller finds out.
        ``limit``: the largest answer read (``PAGE_LIMIT`` for a collection).
        """
        headers = {"Authorization": f"Bearer {token}"}

        async def once() -> Reply:
            reply = await request(
                self._http,
                method,
                self.graph_url + API + path,
                what=what,
                headers=headers,
                json=json,
                timeout=timeout,
                limit=limit,
            )
            if reply.status not in ok:
                raise _graph_error(reply, what)
            return reply

        def again(exc: ProviderError) -> bool:
            return exc.retryable and (repeatable or not isinstance(exc, Unanswered))

        return await with_retries(
            once,
            attempts=self.attempts,
            base=0.5,
            cap=8.0,
            budget=self.max_wait,
            again=again,
        )

    async def user(self, token: str, id_or_upn: str) -> GraphUser | None:
        """The user with this id or UPN, or None if the directory has none."""
        try:
            reply = await self.call(
                token,
                "GET",
                f"/users/{quote(id_or_upn, safe='@')}?$select=id,userPrincipalName,mail",
                what="user lookup",
            )
        except GraphError as exc:
            if exc.status == 404:
                return None
            raise
        body = reply.json()
        return GraphUser(
            id=str(body["id"]),
            user_principal_name=str(body.get("userPrincipalName") or ""),
            mail=body.get("mail") or None,
        )

    async def presences(self, token: str, user_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Presence of these users, 650 a call (unknown ids are left out by Graph)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(user_ids), MAX_PRESENCE_IDS):
            chunk = list(user_ids[start : start + MAX_PRESENCE_IDS])
            reply = await self.call(
                token,
                "POST",
                "/communications/getPresencesByUserId",
                what="presence read",
                json={"ids": chunk},
                limit=PAGE_LIMIT,
            )
            value = reply.json().get("value", [])
            found.extend(item for item in value if isinstance(item, dict))
        return found

    async def batch(self, token: str, items: Sequence[BatchRequest]) -> list[BatchResponse]:
        """Up to 20 requests in one ``$batch``; each item's answer, in the order given."""
        if not 0 < len(items) <= MAX_BATCH:
            raise ValueError(f"a $batch holds 1 to {MAX_BATCH} requests")
        if len({item.id for item in items}) != len(items):
            raise ValueError("the requests of a $batch need ids unique within it")
        reply = await self.call(
            token,
            "POST",
            "/$batch",
            what="$batch",
            json={"requests": [item.encoded() for item in items]},
            limit=PAGE_LIMIT,
        )
        by_id: dict[str, BatchResponse] = {}
        for answer in reply.json().get("responses", []):
            headers = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
            by_id[str(answer.get("id"))] = BatchResponse(
                id=str(answer.get("id")),
                status=int(answer.get("status", 500)),
                retry_after=parse_retry_after(headers.get("retry-after")),
                body=answer.get("body"),
            )
        return [by_id.get(item.id, BatchResponse(item.id, 500)) for item in items]

    async def create_subscription(
        self,
        token: str,
        *,
        user_ids: Sequence[str],
        notification_url: str,
        lifecycle_url: str,
        expires_at: datetime,
        client_state: str,
        certificate: tuple[str, str] | None = None,
    ) -> Subscription:
        """A presence subscription for up to 650 users (``token``: a monitor's delegated).

        ``certificate`` (its id and base64 DER) asks for resource data, encrypted with it.
        """
        if not 0 < len(user_ids) <= MAX_PRESENCE_IDS:
            raise ValueError(f"a presence subscription covers 1 to {MAX_PRESENCE_IDS} users")
        ids = ",".join(f"'{user_id}'" for user_id in user_ids)
        body: dict[str, Any] = {
            "changeType": "updated",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": f"/communications/presences?$filter=id in ({ids})",
            "expirationDateTime": graph_time(expires_at),
            "clientState": client_state,
        }
        if certificate is not None:
            body["includeResourceData"] = True
            body["encryptionCertificateId"], body["encryptionCertificate"] = certificate
        # A create given up on may still be made; a second one would then be refused.
        reply = await self.call(
            token,
            "POST",
            "/subscriptions",
            what="subscribe",
            json=body,
            timeout=max(SUBSCRIBE_TIMEOUT, self._http.timeout.total or 0.0),
            repeatable=False,
        )
        answer = reply.json()
        return Subscription(str(answer["id"]), parse_graph_time(answer["expirationDateTime"]))

    async def renew_subscription(
        self, token: str, subscription_id: str, expires_at: datetime
    ) -> Subscription | None:
        """Extend a subscription; None when Graph no longer has it (recreate, then resync)."""
        try:
            reply = await self.call(
                token,
                "PATCH",
                f"/subscriptions/{quote(subscription_id, safe='')}",
                what="renew subscription",
                json={"expirationDateTime": graph_time(expires_at)},
            )
        except GraphError as exc:
            # 403: the subscription belongs to another app (the client id changed).
            if exc.status in (403, 404):
                return None
            raise
        answer = reply.json()
        return Subscription(str(answer["id"]), parse_graph_time(answer["expirationDateTime"]))

    async def list_subscriptions(self, token: str) -> list[dict[str, Any]]:
        """The subscriptions the token's user and app hold."""
        reply = await self.call(
            token, "GET", "/subscriptions", what="list subscriptions", limit=PAGE_LIMIT
        )
        value = reply.json().get("value", [])
        return [item for item in value if isinstance(item, dict)]

    async def reauthorize_subscription(self, token: str, subscription_id: str) -> bool:
        """Answer a ``reauthorizationRequired``; False when the subscription is gone."""
        try:
            await self.call(
                token,
                "POST",
                f"/subscriptions/{quote(subscription_id, safe='')}/reauthorize",
                what="reauthorize subscription",
            )
        except GraphError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def delete_subscription(self, token: str, subscription_id: str) -> None:
        """Delete a subscription (one Graph no longer has is fine)."""
        try:
            await self.call(
                token,
                "DELETE",
                f"/subscriptions/{quote(subscription_id, safe='')}",
                what="delete subscription",
            )
        except GraphError as exc:
            if exc.status not in (403, 404):
                raise
