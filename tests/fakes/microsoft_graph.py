"""A fake of Microsoft Graph v1.0: users, Teams presence, ``$batch`` and change notifications.

The gateway writes CloudLink presence into Teams (setPresence as the app), reads presence,
and keeps presence subscriptions alive with presence monitors' delegated tokens, receiving
Graph's notifications. A mock would accept any call and never push anything; this fake
enforces Graph's rules and pushes real notifications over HTTP:

* Every call needs a bearer JWT this fake's identity platform signed, unexpired, for Graph
  (401 ``InvalidAuthenticationToken`` otherwise), and the permission the call needs: a role
  for app tokens, a ``scp`` scope for delegated ones (403 otherwise).
* setPresence: app tokens with Presence.ReadWrite.All only, ``sessionId`` = the token's app
  id, the five accepted availability/activity pairs, ``expirationDuration`` PT5M to PT4H
  (5 minutes when absent). An Available session fades to Available/AvailableInactive after
  ``available_fade`` seconds and to Away/Away after twice that, unless set again; a session
  expires (gone) after its duration. setUserPreferredPresence takes its six pairs and only
  shows while some session (an app's or the user's own Teams client) exists. clearPresence
  of a session that does not exist is 404.
* What GET presence shows: the preferred presence when set and a session exists, else the
  highest of the live sessions and the Teams client's state (DoNotDisturb > Busy >
  Available > Away/BeRightBack > Offline), else Offline/Offline.
* Presence requests (read, bulk read, set, clear; each ``$batch`` item on its own) are limited
  per app and tenant: ``presence_budget`` per ``presence_window`` seconds (Graph: 1,500 per
  30 s), then 429 with a ``Retry-After`` in seconds, fractional when the wait is.
* ``$batch``: 1 to 20 requests with unique ids and URLs relative to /v1.0; a write without
  ``Content-Type: application/json`` (or without a body) answers 400 on its own; each item
  runs as if called directly and is throttled on its own. Responses come back shuffled
  (Graph does not keep the order) unless ``shuffle_batch_responses`` is off. A test can
  script a batch refused as a whole (``refuse_batch``) and hold every batch until it lets
  them go (``holding_batches``), so that what callers send meanwhile piles up.
* Subscriptions to ``/communications/presences?$filter=id in (...)`` (1 to 650 ids) or
  ``/communications/presences/{id}``: a delegated token with Presence.Read.All (app tokens are
  refused), one subscription per user per app (409), https notification URLs (http only to
  loopback), ``expirationDateTime`` in the future and at most 60 minutes ahead (400 beyond;
  shortened to ``max_subscription_minutes`` when that is less), resource data only with an
  encryption certificate, and the validation handshake on both URLs before creating (400
  ``ValidationError`` unless each answers 200 ``text/plain`` with the token within
  ``notification_timeout``; ``unanswered_validations`` makes the next ones fail as if the
  endpoint were too slow). ``create_latency`` seconds more pass before a create is
  answered (Graph can take that long; the subscription exists when the answer leaves,
  whether or not the caller still waits for it). Renew, delete, reauthorize only by the
  creating user and app; an expired, dropped or deleted subscription is 404 and sends
  nothing.
* Notifications: each change of a covered user's visible presence (whatever caused it: a
  Teams client, a setPresence, a fading session) is POSTed to the subscription's URL, items
  for the same URL within ``notification_batch_window`` seconds in one POST. Rich ones carry
  ``encryptedContent`` (RSA-OAEP-SHA1 key, AES-256-CBC data, HMAC-SHA256 signature) and the
  POST ``validationTokens``. A delivery that is not 2xx within ``slow_notification`` seconds
  is retried ``notification_attempts`` times in all (Graph keeps trying for hours).

Notifications go out from a delivery thread of the fake's own, with its own event loop: the
test thread (``set_teams_presence``) and timers (fading sessions) trigger them as well as
requests, and ``TestClient`` runs each request on a short-lived loop. ``wait_idle`` (or
``flush``) waits until every queued delivery is done; ``close`` stops the thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote, urlsplit

import httpx2
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.loopback import Fault
from tests.fakes.microsoft_identity import (
    GRAPH_APP_ID,
    GRAPH_NOTIFICATIONS_APP_ID,
    GRAPH_RESOURCE,
    Directory,
)

MAX_PRESENCE_IDS = 650
MAX_BATCH = 20
MAX_SUBSCRIPTION_MINUTES = 60
MAX_CLIENT_STATE = 128
SET_PRESENCE_PAIRS = frozenset(
    {
        ("Available", "Available"),
        ("Busy", "InACall"),
        ("Busy", "InAConferenceCall"),
        ("Away", "Away"),
        ("DoNotDisturb", "Presenting"),
    }
)
PREFERRED_PAIRS = frozenset(
    {
        ("Available", "Available"),
        ("Busy", "Busy"),
        ("DoNotDisturb", "DoNotDisturb"),
        ("BeRightBack", "BeRightBack"),
        ("Away", "Away"),
        ("Offline", "OffWork"),
    }
)
PRIORITY = {
    "DoNotDisturb": 5,
    "Busy": 4,
    "BusyIdle": 4,
    "Available": 3,
    "AvailableIdle": 3,
    "Away": 2,
    "BeRightBack": 2,
    "Offline": 1,
    "PresenceUnknown": 0,
}
OFFLINE = ("Offline", "Offline")
SESSION_MIN, SESSION_DEFAULT, SESSION_MAX = 300.0, 300.0, 4 * 3600.0
JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
UNAUTHENTICATED = {
    "WWW-Authenticate": 'Bearer realm="", authorization_uri='
    '"https://login.microsoftonline.com/common/oauth2/authorize", '
    f'client_id="{GRAPH_APP_ID}"'
}
DURATION = re.compile(
    r"P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
PRESENCE_FILTER = re.compile(
    r"/?communications/presences\?\$filter=id\s+in\s*\((?P<ids>.*)\)", re.IGNORECASE
)
PRESENCE_SINGLE = re.compile(r"/?communications/presences/(?P<id>[^/?]+)", re.IGNORECASE)
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_OAEP_SHA1 = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA1()),
    algorithm=hashes.SHA1(),
    label=None,
)


def graph_time(moment: datetime) -> str:
    """A timestamp as Graph writes it: UTC, seven fractional digits, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def parse_graph_time(value: str) -> datetime:
    """An ISO 8601 timestamp (any fractional digits, ``Z`` or an offset) as aware UTC."""
    text = value.strip().replace("z", "Z").replace("Z", "+00:00")
    # Python's parser takes at most six fractional digits; Graph writes seven.
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment.astimezone(UTC)


def parse_duration(value: str) -> float:
    """An ISO 8601 duration (``PT5M``, ``PT1H30M``, ``P1D``) in seconds."""
    match = DURATION.fullmatch(value.strip())
    if match is None or value.strip() in ("P", "PT") or value.strip().endswith("T"):
        raise ValueError(f"{value!r} is not an ISO 8601 duration")
    days, hours, minutes, seconds = (match.group(name) or "0" for name in ("d", "h", "m", "s"))
    return int(days) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def encrypt_resource(
    resource: Mapping[str, Any], certificate: x509.Certificate, certificate_id: str
) -> dict[str, str]:
    """``encryptedContent`` of a rich notification, built as Graph does (PROTOCOLS §4)."""
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    key = os.urandom(32)
    padder = symmetric_padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(orjson.dumps(dict(resource))) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = encryptor.update(padded) + encryptor.finalize()
    der = certificate.public_bytes(serialization.Encoding.DER)
    return {
        "data": base64.b64encode(data).decode("ascii"),
        "dataSignature": base64.b64encode(hmac.digest(key, data, hashlib.sha256)).decode(),
        "dataKey": base64.b64encode(public_key.encrypt(key, _OAEP_SHA1)).decode("ascii"),
        "encryptionCertificateId": certificate_id,
        "encryptionCertificateThumbprint": hashlib.sha1(der).hexdigest().upper(),
    }


def notification_item(
    subscription: GraphSubscription, user_id: str, visible: tuple[str, str]
) -> dict[str, Any]:
    """The change notification Graph sends a subscription for a user's new presence: with
    the presence encrypted when the subscription asked for resource data."""
    odata_id = f"communications/presences('{user_id}')"
    item: dict[str, Any] = {"subscriptionId": subscription.id}
    if subscription.client_state is not None:
        item["clientState"] = subscription.client_state
    item |= {
        "changeType": "updated",
        "resource": odata_id,
        "subscriptionExpirationDateTime": graph_time(subscription.expires),
        "tenantId": subscription.tenant_id,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.presence",
            "@odata.id": odata_id,
            "id": user_id,
        },
    }
    if subscription.certificate is not None and subscription.certificate_id is not None:
        resource = {
            "@odata.type": "#Microsoft.Graph.presence",
            "@odata.id": odata_id,
            **presence_resource(user_id, visible),
        }
        item["encryptedContent"] = encrypt_resource(
            resource, subscription.certificate, subscription.certificate_id
        )
    return item


class GraphError(Exception):
    """An error answered in Graph's JSON shape."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def answer(self) -> Answer:
        """The error as an answer (of a request or of a ``$batch`` item)."""
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": str(uuid.uuid4()),
                    "client-request-id": str(uuid.uuid4()),
                },
            }
        }
        return Answer(self.status, body, self.headers)


def graph_fault_response(fault: Fault) -> Response:
    """A scripted failure of Graph, in Graph's error shape."""
    code = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
    error = GraphError(
        fault.status,
        code.get(fault.status, "InternalServerError" if fault.status >= 500 else "BadRequest"),
        "Scripted failure of the fake.",
        fault.headers(),
    )
    return error.answer().response()


@dataclass
class Answer:
    """What a Graph operation answers, before it becomes a response or a ``$batch`` item."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        """The HTTP response."""
        headers = {"request-id": str(uuid.uuid4()), **self.headers}
        if self.body is None:
            return Response(status_code=self.status, headers=headers)
        return Response(
            orjson.dumps(self.body), status_code=self.status, headers=headers, media_type=JSON_TYPE
        )

    def batch_item(self, item_id: str) -> dict[str, Any]:
        """The answer as one entry of a ``$batch`` response."""
        headers = dict(self.headers)
        if self.body is not None:
            headers["Content-Type"] = JSON_TYPE
        entry: dict[str, Any] = {"id": item_id, "status": self.status, "headers": headers}
        if self.body is not None:
            entry["body"] = self.body
        return entry


@dataclass(frozen=True)
class Caller:
    """Who calls: from a verified access token."""

    tenant_id: str
    app_id: str
    user_id: str | None
    permissions: frozenset[str]

    @property
    def is_app(self) -> bool:
        """An app-only token (client credentials), not a signed-in user's."""
        return self.user_id is None

    def has(self, *permissions: str) -> bool:
        """Whether the token carries any of ``permissions`` (roles or scopes)."""
        return not self.permissions.isdisjoint(permissions)


@dataclass
class Session:
    """A presence session an app set for a user (setPresence), in monotonic seconds."""

    availability: str
    activity: str
    set_at: float
    expires_at: float
    expires_wall: datetime


@dataclass
class Preferred:
    """The user's preferred presence (setUserPreferredPresence)."""

    availability: str
    activity: str
    expires_at: float
    expires_wall: datetime


@dataclass
class UserPresence:
    """Everything a user's visible presence is made of."""

    teams: tuple[str, str] | None = None
    teams_at: float = 0.0
    sessions: dict[str, Session] = field(default_factory=dict)
    preferred: Preferred | None = None


@dataclass
class GraphSubscription:
    """A change-notification subscription for presence."""

    id: str
    tenant_id: str
    app_id: str
    creator_id: str
    resource: str
    user_ids: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime
    certificate: x509.Certificate | None
    certificate_b64: str | None
    certificate_id: str | None
    reauthorized: int = 0

    def live(self) -> bool:
        """Not expired yet."""
        return self.expires > datetime.now(UTC)

    def as_json(self) -> dict[str, Any]:
        """The subscription resource as Graph answers it."""
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": "updated",
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_time(self.expires),
            "creatorId": self.creator_id,
            "includeResourceData": self.certificate is not None,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": self.certificate_b64,
            "encryptionCertificateId": self.certificate_id,
            "notificationUrlAppId": None,
        }


def visible_presence(state: UserPresence | None, now: float, fade: float) -> tuple[str, str]:
    """The (availability, activity) Graph shows for a user at monotonic time ``now``."""
    if state is None:
        return OFFLINE
    candidates: list[tuple[int, float, str, str]] = []
    for session in state.sessions.values():
        if session.expires_at <= now:
            continue
        availability, activity = session.availability, session.activity
        if availability == "Available" and now - session.set_at >= 2 * fade:
            availability, activity = "Away", "Away"
        elif availability == "Available" and now - session.set_at >= fade:
            activity = "AvailableInactive"
        candidates.append((PRIORITY[availability], session.set_at, availability, activity))
    if state.teams is not None and PRIORITY[state.teams[0]] > PRIORITY["Offline"]:
        candidates.append((PRIORITY[state.teams[0]], state.teams_at, *state.teams))
    preferred = state.preferred
    if preferred is not None and preferred.expires_at > now and candidates:
        return preferred.availability, preferred.activity
    if not candidates:
        return state.teams or OFFLINE
    _, _, availability, activity = max(candidates)
    return availability, activity


def next_presence_change(state: UserPresence, now: float, fade: float) -> float | None:
    """When the visible presence may next change by itself (a fade or an expiry), if ever."""
    moments = [s.expires_at for s in state.sessions.values() if s.expires_at > now]
    for session in state.sessions.values():
        if session.availability == "Available":
            moments += [
                moment
                for moment in (session.set_at + fade, session.set_at + 2 * fade)
                if now < moment < session.expires_at
            ]
    if state.preferred is not None and state.preferred.expires_at > now:
        moments.append(state.preferred.expires_at)
    return min(moments) if moments else None


def presence_resource(user_id: str, visible: tuple[str, str]) -> dict[str, Any]:
    """A presence as Graph returns it."""
    return {
        "id": user_id,
        "availability": visible[0],
        "activity": visible[1],
        "statusMessage": None,
        "outOfOfficeSettings": {"message": None, "isOutOfOffice": False},
    }


class RateLimiter:
    """A sliding window of requests per key: ``budget`` per ``window`` seconds."""

    def __init__(self, window: float, budget: int) -> None:
        self.window = window
        self.budget = budget
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: tuple[str, str]) -> float | None:
        """Count one request, or answer how many seconds to wait (the request not counted)."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if len(seen) >= self.budget:
                return seen[0] + self.window - now
            seen.append(now)
            return None


def retry_after(seconds: float) -> str:
    """Seconds as Graph's ``Retry-After`` writes them: whole, or fractional to a tenth."""
    tenths = max(1, -(-int(seconds * 1000) // 100))
    return str(tenths // 10) if tenths % 10 == 0 else f"{tenths / 10:.1f}"


@dataclass
class _Pending:
    items: list[dict[str, Any]] = field(default_factory=list)
    audiences: set[tuple[str, str]] = field(default_factory=set)


class PushEngine:
    """Delivers notifications from a thread and event loop of its own (see module doc)."""

    def __init__(
        self,
        directory: Directory,
        *,
        batch_window: float,
        attempts: int,
        retry_delays: tuple[float, ...],
        slow_after: float,
        timeout: float,
    ) -> None:
        self.directory = directory
        self.batch_window = batch_window
        self.attempts = attempts
        self.retry_delays = retry_delays or (0.0,)
        self.slow_after = slow_after
        self.timeout = timeout
        self.sent: list[dict[str, Any]] = []
        self._start_lock = threading.Lock()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx2.AsyncClient | None = None
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def _started(self) -> asyncio.AbstractEventLoop | None:
        with self._start_lock:
            if self._closed:
                return None
            if self._loop is None:
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=asyncio.run, args=(self._main(ready),), name="fake-graph", daemon=True
                )
                self._thread.start()
                if not ready.wait(10) or self._loop is None:
                    raise RuntimeError("the fake Graph's delivery thread did not start")
            return self._loop

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        async with httpx2.AsyncClient(timeout=self.timeout) as client:
            self._client = client
            self._loop = asyncio.get_running_loop()
            ready.set()
            await self._stop.wait()
            for timer in self._timers.values():
                timer.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def post(self, url: str, item: dict[str, Any], audience: tuple[str, str] | None) -> None:
        """Queue one notification item for ``url``; ``audience`` (tenant, client id) when rich."""
        loop = self._started()
        if loop is None:
            return  # closed: the test is over, nothing is delivered any more
        with self._idle:
            self._outstanding += 1
        try:
            loop.call_soon_threadsafe(self._add, url, item, audience)
        except RuntimeError:  # closed meanwhile
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()

    def schedule(self, key: str, deadline: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the delivery thread at monotonic ``deadline`` (one timer a key)."""
        loop = self._started()
        if loop is not None:
            loop.call_soon_threadsafe(self._set_timer, key, deadline, callback)

    def _set_timer(self, key: str, deadline: float, callback: Callable[[], None]) -> None:
        assert self._loop is not None
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, deadline - time.monotonic()) + 0.002
        self._timers[key] = self._loop.call_later(delay, callback)

    def _add(self, url: str, item: dict[str, Any], audience: tuple[str, str] | None) -> None:
        assert self._loop is not None
        pending = self._pending.get(url)
        if pending is None:
            pending = self._pending[url] = _Pending()
            self._loop.call_later(self.batch_window, self._launch, url)
        pending.items.append(item)
        if audience is not None:
            pending.audiences.add(audience)

    def _launch(self, url: str) -> None:
        pending = self._pending.pop(url)
        if self._stop is not None and self._stop.is_set():
            return  # closing: close() forgets what is outstanding
        task = asyncio.get_running_loop().create_task(self._deliver(url, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def validation_token(self, tenant_id: str, client_id: str) -> str:
        """A validation token as Graph puts in POSTs with resource data for this app."""
        now = int(time.time())
        return self.directory.sign(
            {
                "aud": client_id,
                "iss": f"https://sts.windows.net/{tenant_id}/",
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
                "tid": tenant_id,
                "appid": GRAPH_NOTIFICATIONS_APP_ID,
                "azp": GRAPH_NOTIFICATIONS_APP_ID,
                "idtyp": "app",
                "ver": "1.0",
            }
        )

    async def _deliver(self, url: str, pending: _Pending) -> None:
        assert self._client is not None
        try:
            body: dict[str, Any] = {"value": pending.items}
            if pending.audiences:
                body["validationTokens"] = [
                    self.validation_token(*audience) for audience in sorted(pending.audiences)
                ]
            content = orjson.dumps(body)
            headers = {"Content-Type": "application/json; charset=utf-8"}
            for attempt in range(1, self.attempts + 1):
                started = time.monotonic()
                status: int | None = None
                error: str | None = None
                try:
                    status = (
                        await self._client.post(url, content=content, headers=headers)
                    ).status_code
                except httpx2.HTTPError as exc:
                    error = type(exc).__name__
                elapsed = time.monotonic() - started
                ok = status is not None and 200 <= status < 300 and elapsed <= self.slow_after
                self.record(
                    {
                        "kind": "notification",
                        "url": url,
                        "body": body,
                        "status": status,
                        "error": error,
                        "elapsed": elapsed,
                        "attempt": attempt,
                        "ok": ok,
                    }
                )
                if ok or attempt == self.attempts:
                    return
                await asyncio.sleep(self.retry_delays[min(attempt, len(self.retry_delays)) - 1])
        finally:
            with self._idle:
                self._outstanding -= len(pending.items)
                self._idle.notify_all()

    def record(self, entry: dict[str, Any]) -> None:
        """Keep one delivery attempt in ``sent``."""
        with self._idle:
            self.sent.append(entry)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every queued notification was delivered (or given up on)."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._outstanding == 0, timeout):
                raise TimeoutError(f"{self._outstanding} notifications still queued")

    def close(self) -> None:
        """Stop the delivery thread (what is still queued is dropped)."""
        with self._start_lock:
            loop, stop, thread = self._loop, self._stop, self._thread
            self._loop, self._closed = None, True
        if loop is not None and stop is not None and thread is not None:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=10)
        with self._idle:
            self._outstanding = 0
            self._idle.notify_all()


Handler = Callable[["Caller", dict[str, str], Mapping[str, str], Any], Awaitable[Answer]]


class FakeGraph:
    """Graph's users, presence, ``$batch`` and subscriptions, in memory (see module doc).

    State for tests: ``set_presence_calls`` (every setPresence tried: user id, body, status),
    ``batch_items`` ((method, url) of every ``$batch`` item), ``batches`` (every ``$batch``:
    its size, its items' methods, the status it was answered as a whole), ``validations``
    (every validation handshake: url, token, status, ok, elapsed), ``reauthorizations``
    (subscription ids), and the push engine's ``notifications_sent``.
    """

    def __init__(
        self,
        directory: Directory,
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
        if not 0 < max_subscription_minutes <= MAX_SUBSCRIPTION_MINUTES:
            raise ValueError("max_subscription_minutes must be more than 0 and at most 60")
        self.directory = directory
        self.max_subscription_minutes = max_subscription_minutes
        self.notification_timeout = notification_timeout
        self.create_latency = 0.0
        # The next this many validation handshakes fail as if the endpoint never answered.
        self.unanswered_validations = 0
        self.available_fade = available_fade
        self.shuffle_batch_responses = shuffle_batch_responses
        self.rate_limiter = RateLimiter(presence_window, presence_budget)
        self.engine = PushEngine(
            directory,
            batch_window=notification_batch_window,
            attempts=notification_attempts,
            retry_delays=notification_retry_delays,
            slow_after=slow_notification,
            timeout=notification_timeout,
        )
        self.set_presence_calls: list[dict[str, Any]] = []
        self.batch_items: list[tuple[str, str]] = []
        self.batches: list[dict[str, Any]] = []
        self.validations: list[dict[str, Any]] = []
        self.reauthorizations: list[str] = []
        self._presence: dict[str, UserPresence] = {}
        self._shown: dict[str, tuple[str, str]] = {}
        self._subscriptions: dict[str, GraphSubscription] = {}
        self._throttled_items = 0
        self._throttle_retry_after = "1"
        self._refusals: list[tuple[int, str | None, GraphError]] = []
        self._batches_open = threading.Event()
        self._batches_open.set()
        user = r"(?P<user>[^/]+)"
        subscription = r"subscriptions/(?P<id>[^/]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "me", self._get_me),
            ("GET", "me/presence", self._get_presence),
            ("GET", f"users/{user}", self._get_user),
            ("GET", f"users/{user}/presence", self._get_presence),
            ("GET", f"communications/presences/{user}", self._get_presence),
            ("POST", "communications/getPresencesByUserId", self._get_presences),
            ("POST", f"users/{user}/presence/setPresence", self._set_presence),
            ("POST", f"users/{user}/presence/clearPresence", self._clear_presence),
            ("POST", f"users/{user}/presence/setUserPreferredPresence", self._set_preferred),
            ("POST", f"users/{user}/presence/clearUserPreferredPresence", self._clear_preferred),
            ("POST", "subscriptions", self._create_subscription),
            ("GET", "subscriptions", self._list_subscriptions),
            ("GET", subscription, self._get_subscription),
            ("PATCH", subscription, self._renew_subscription),
            ("DELETE", subscription, self._delete_subscription),
            ("POST", f"{subscription}/reauthorize", self._reauthorize_subscription),
        ]
        self._table = [
            (method, re.compile(pattern, re.IGNORECASE), handler)
            for method, pattern, handler in table
        ]
        self.routes = [
            Route("/v1.0/{path:path}", self._handle, methods=["GET", "POST", "PATCH", "DELETE"])
        ]

    # Scripting and inspection

    def set_teams_presence(
        self, user_id: str, availability: str, activity: str, *, notify: bool = True
    ) -> None:
        """The user changes presence in their own Teams client (Offline: signed out).

        ``notify=False``: Graph loses the notification, as it may; only a read (sync all)
        then shows the change.
        """
        if availability not in PRIORITY:
            raise ValueError(f"{availability!r} is not a Graph availability")
        with self.directory.lock:
            state = self._presence.setdefault(self._user_id(user_id), UserPresence())
            state.teams, state.teams_at = (availability, activity), time.monotonic()
            if notify:
                self._publish(self._user_id(user_id))

    def presence(self, user_id: str) -> dict[str, Any]:
        """The user's presence as Graph returns it now."""
        uid = self._user_id(user_id)
        with self.directory.lock:
            state = self._presence.get(uid)
            return presence_resource(uid, self._visible(state))

    def sessions(self, user_id: str) -> dict[str, dict[str, Any]]:
        """The user's live setPresence sessions by sessionId (what each app set, until when)."""
        now = time.monotonic()
        with self.directory.lock:
            state = self._presence.get(self._user_id(user_id)) or UserPresence()
            return {
                session_id: {
                    "availability": s.availability,
                    "activity": s.activity,
                    "expires_at": s.expires_wall,
                }
                for session_id, s in state.sessions.items()
                if s.expires_at > now
            }

    def preferred_presence(self, user_id: str) -> dict[str, Any] | None:
        """The user's preferred presence (setUserPreferredPresence), if set and unexpired."""
        with self.directory.lock:
            state = self._presence.get(self._user_id(user_id))
            preferred = state.preferred if state is not None else None
            if preferred is None or preferred.expires_at <= time.monotonic():
                return None
            return {
                "availability": preferred.availability,
                "activity": preferred.activity,
                "expires_at": preferred.expires_wall,
            }

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every live subscription, as Graph answers it."""
        with self.directory.lock:
            return [s.as_json() for s in self._subscriptions.values() if s.live()]

    def drop_subscription(self, subscription_id: str) -> None:
        """Graph loses the subscription silently: no lifecycle event, then 404 on renew."""
        with self.directory.lock:
            del self._subscriptions[subscription_id]

    def expire_subscription(self, subscription_id: str) -> None:
        """Make the subscription reach its expirationDateTime now."""
        with self.directory.lock:
            self._subscriptions[subscription_id].expires = datetime.now(UTC)

    def throttle_batch_items(self, count: int, retry_after: str = "1") -> None:
        """Answer 429 (with this Retry-After) to the next ``count`` ``$batch`` items."""
        with self.directory.lock:
            self._throttled_items, self._throttle_retry_after = count, retry_after

    def refuse_batch(
        self,
        *,
        at_least: int = 2,
        method: str | None = None,
        status: int = 400,
        code: str = "BadRequest",
        message: str = "Invalid batch payload format.",
    ) -> None:
        """Refuse the next ``$batch`` of at least ``at_least`` requests (all of ``method``,
        when given) as a whole, once, as Graph refuses a batch it will not run; none of
        its items is run."""
        with self.directory.lock:
            self._refusals.append((at_least, method, GraphError(status, code, message)))

    @contextmanager
    def holding_batches(self) -> Iterator[None]:
        """``$batch`` requests wait while inside (other calls are served), and are run when
        it is left: what the caller sends meanwhile piles up behind them."""
        self._batches_open.clear()
        try:
            yield
        finally:
            self._batches_open.set()

    async def send_lifecycle(
        self, subscription_id: str, event: str = "reauthorizationRequired"
    ) -> int:
        """POST a lifecycle notification to the subscription's lifecycle URL; its status.

        ``subscriptionRemoved`` also removes the subscription, as Graph has by then.
        """
        if event not in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
            raise ValueError(f"{event!r} is not a lifecycle event")
        with self.directory.lock:
            subscription = self._subscriptions[subscription_id]
            if subscription.lifecycle_url is None:
                raise ValueError(f"subscription {subscription_id} has no lifecycle URL")
            item: dict[str, Any] = {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": graph_time(subscription.expires),
                "tenantId": subscription.tenant_id,
                "lifecycleEvent": event,
            }
            if subscription.client_state is not None:
                item["clientState"] = subscription.client_state
            if event == "subscriptionRemoved":
                del self._subscriptions[subscription_id]
        body = {"value": [item]}
        started = time.monotonic()
        async with httpx2.AsyncClient(timeout=self.notification_timeout) as client:
            response = await client.post(
                subscription.lifecycle_url,
                content=orjson.dumps(body),
                headers={"Content-Type": "application/json; charset=utf-8"},
            )
        record = {
            "kind": "lifecycle",
            "url": subscription.lifecycle_url,
            "body": body,
            "status": response.status_code,
            "error": None,
            "elapsed": time.monotonic() - started,
            "attempt": 1,
            "ok": response.is_success,
        }
        self.engine.record(record)
        return response.status_code

    # Presence state and the push engine

    def _user_id(self, user_id: str) -> str:
        user = self.directory.users.get(user_id.lower()) or self.directory.user_by_upn(user_id)
        if user is None:
            raise KeyError(f"no user {user_id}")
        return user.id

    def _visible(self, state: UserPresence | None) -> tuple[str, str]:
        return visible_presence(state, time.monotonic(), self.available_fade)

    def _publish(self, user_id: str) -> None:
        """After any change for the user: notify when the visible presence changed, and
        come back when it will change by itself. Called with the directory lock held."""
        now = time.monotonic()
        state = self._presence.get(user_id)
        if state is not None:
            state.sessions = {k: s for k, s in state.sessions.items() if s.expires_at > now}
        visible = visible_presence(state, now, self.available_fade)
        if visible != self._shown.get(user_id, OFFLINE):
            self._shown[user_id] = visible
            self._notify(user_id, visible)
        deadline = None if state is None else next_presence_change(state, now, self.available_fade)
        if deadline is not None:
            self.engine.schedule(user_id, deadline, lambda: self._recheck(user_id))

    def _recheck(self, user_id: str) -> None:
        with self.directory.lock:
            self._publish(user_id)

    def _notify(self, user_id: str, visible: tuple[str, str]) -> None:
        for subscription in self._subscriptions.values():
            if user_id not in subscription.user_ids or not subscription.live():
                continue
            item = notification_item(subscription, user_id, visible)
            audience = (
                (subscription.tenant_id, subscription.app_id)
                if "encryptedContent" in item
                else None
            )
            self.engine.post(subscription.notification_url, item, audience)

    # HTTP

    async def _handle(self, request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        try:
            caller = self._authenticate(request)
            body = _json_body(await request.body(), request.headers.get("content-type"))
            if request.method == "POST" and path.lower() == "$batch":
                answer = await self._batch(caller, body)
            else:
                query = dict(request.query_params)
                answer = await self._dispatch(caller, request.method, path, query, body)
        except GraphError as exc:
            answer = exc.answer()
        return answer.response()

    def _authenticate(self, request: Request) -> Caller:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("Access token is empty.")
        try:
            key = self.directory.public_key(jwt.get_unverified_header(token).get("kid"))
            if key is None:
                raise _unauthenticated("Signature validation failed: unknown signing key.")
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=[GRAPH_RESOURCE, GRAPH_APP_ID],
                options={"require": ["exp", "aud", "iss", "tid", "appid"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("Lifetime validation failed, the token is expired.") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("Access token validation failure. Invalid audience.") from None
        except jwt.PyJWTError:
            raise _unauthenticated("Access token validation failure.") from None
        delegated = claims.get("idtyp") == "user"
        permissions = str(claims.get("scp", "")).split() if delegated else claims.get("roles", [])
        return Caller(
            str(claims["tid"]),
            str(claims["appid"]),
            str(claims["oid"]) if delegated else None,
            frozenset(str(permission) for permission in permissions),
        )

    async def _dispatch(
        self, caller: Caller, method: str, path: str, query: Mapping[str, str], body: Any
    ) -> Answer:
        path_exists = False
        for verb, pattern, handler in self._table:
            match = pattern.fullmatch(path)
            if match is not None:
                path_exists = True
                if verb == method:
                    return await handler(caller, match.groupdict(), query, body)
        if path_exists:
            raise GraphError(405, "Request_BadRequest", f"{method} is not allowed on /{path}.")
        segment = path.split("/", maxsplit=1)[0]
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    async def _batch(self, caller: Caller, body: Any) -> Answer:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > MAX_BATCH:
            raise GraphError(
                400, "BadRequest", f"The batch has {len(requests)} requests: at most 20."
            )
        for item in requests:
            if not (
                isinstance(item, dict)
                and all(isinstance(item.get(name), str) for name in ("id", "method", "url"))
            ):
                raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if not self._batches_open.is_set():
            await asyncio.to_thread(self._batches_open.wait)
        refusal = self._refusal(requests)
        self.batches.append(
            {
                "size": len(requests),
                "methods": sorted({item["method"].upper() for item in requests}),
                "status": refusal.status if refusal else 200,
            }
        )
        if refusal is not None:
            raise refusal
        responses = [await self._batch_item(caller, item) for item in requests]
        if self.shuffle_batch_responses:
            random.shuffle(responses)
        return Answer(200, {"responses": responses})

    def _refusal(self, requests: list[dict[str, Any]]) -> GraphError | None:
        """Why the whole batch is refused (its ids repeat, or a refusal was scripted)."""
        if len({item["id"] for item in requests}) != len(requests):
            return GraphError(400, "BadRequest", "Request ids in a batch must be unique.")
        methods = {item["method"].upper() for item in requests}
        with self.directory.lock:
            for index, (at_least, method, error) in enumerate(self._refusals):
                if len(requests) >= at_least and (method is None or methods == {method}):
                    del self._refusals[index]
                    return error
        return None

    async def _batch_item(self, caller: Caller, item: dict[str, Any]) -> dict[str, Any]:
        item_id, method, url = item["id"], item["method"].upper(), item["url"]
        self.batch_items.append((method, url))
        parts = urlsplit(url)
        path = unquote(parts.path).strip("/")
        try:
            self._check_batch_item(item, method, path)
            answer = await self._dispatch(
                caller, method, path, dict(parse_qsl(parts.query)), item.get("body")
            )
        except GraphError as exc:
            answer = exc.answer()
        return answer.batch_item(item_id)

    def _check_batch_item(self, item: Mapping[str, Any], method: str, path: str) -> None:
        """Refuse what Graph refuses per item, and the throttling scripted for items."""
        headers = item.get("headers") or {}
        content_type = next(
            (str(v) for k, v in headers.items() if str(k).lower() == "content-type"), ""
        )
        if method in ("POST", "PATCH", "PUT") and (
            item.get("body") is None or not content_type.lower().startswith("application/json")
        ):
            raise GraphError(
                400,
                "BadRequest",
                f"Write request id : {item['id']} does not contain Content-Type header or body.",
            )
        parts = urlsplit(item["url"])
        if parts.scheme or parts.netloc or path.lower().startswith(("v1.0", "beta", "$batch")):
            raise GraphError(
                400, "BadRequest", f"Invalid request URL {item['url']!r} in the batch."
            )
        with self.directory.lock:
            throttled = self._throttled_items > 0
            self._throttled_items -= 1 if throttled else 0
        if throttled:
            raise _too_many(self._throttle_retry_after)

    def _count_presence_request(self, caller: Caller) -> None:
        wait = self.rate_limiter.take((caller.tenant_id, caller.app_id))
        if wait is not None:
            raise _too_many(retry_after(wait))

    def _target_user(self, caller: Caller, match: Mapping[str, str]) -> str:
        wanted = match.get("user") or caller.user_id
        if wanted is None:
            raise GraphError(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        user = self.directory.user(caller.tenant_id, wanted)
        if user is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{wanted}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        return user.id

    # Users and presence

    async def _get_me(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        return await self._get_user(caller, match, query, body)

    async def _get_user(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        if "user" in match and not caller.has(
            "User.Read.All", "User.ReadBasic.All", "User.ReadWrite.All", "Directory.Read.All"
        ):
            raise _forbidden("Authorization_RequestDenied")
        resource = self.directory.users[self._target_user(caller, match)].resource()
        selected = [name.strip() for name in query.get("$select", "").split(",") if name.strip()]
        if selected:
            resource = {name: resource[name] for name in selected if name in resource}
        context = f"{GRAPH_RESOURCE}/v1.0/$metadata#users/$entity"
        return Answer(200, {"@odata.context": context, **resource})

    async def _get_presence(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        own = "user" not in match and caller.has("Presence.Read")
        if not own and not caller.has("Presence.Read.All", "Presence.ReadWrite.All"):
            raise _forbidden()
        user_id = self._target_user(caller, match)
        self._count_presence_request(caller)
        with self.directory.lock:
            resource = presence_resource(user_id, self._visible(self._presence.get(user_id)))
        context = f"{GRAPH_RESOURCE}/v1.0/$metadata#users('{user_id}')/presence/$entity"
        return Answer(200, {"@odata.context": context, **resource})

    async def _get_presences(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        if not caller.has("Presence.Read.All", "Presence.ReadWrite.All"):
            raise _forbidden()
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise GraphError(400, "BadRequest", "The request needs 'ids', a list of user ids.")
        if len(ids) > MAX_PRESENCE_IDS:
            raise GraphError(
                400, "BadRequest", f"{len(ids)} ids: at most {MAX_PRESENCE_IDS} are allowed."
            )
        self._count_presence_request(caller)
        value = []
        with self.directory.lock:
            for wanted in ids:
                user = self.directory.users.get(wanted.lower())
                if user is not None and user.tenant_id == caller.tenant_id:
                    value.append(
                        presence_resource(user.id, self._visible(self._presence.get(user.id)))
                    )
        context = f"{GRAPH_RESOURCE}/v1.0/$metadata#Collection(microsoft.graph.presence)"
        return Answer(200, {"@odata.context": context, "value": value})

    def _session_writer(self, caller: Caller, match: Mapping[str, str]) -> str:
        if not caller.is_app or not caller.has("Presence.ReadWrite.All"):
            raise _forbidden()
        user_id = self._target_user(caller, match)
        self._count_presence_request(caller)
        return user_id

    async def _set_presence(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        record: dict[str, Any] = {"user_id": match.get("user"), "body": body, "status": None}
        self.set_presence_calls.append(record)
        try:
            record["user_id"] = self._apply_session(caller, match, body)
        except GraphError as exc:
            record["status"] = exc.status
            raise
        record["status"] = 200
        return Answer(200)

    def _apply_session(self, caller: Caller, match: Mapping[str, str], body: Any) -> str:
        user_id = self._session_writer(caller, match)
        fields = _object(body)
        session_id = _string(fields, "sessionId")
        if session_id.lower() != caller.app_id.lower():
            raise GraphError(
                400, "BadRequest", "The sessionId must be the calling application's id."
            )
        pair = (_string(fields, "availability"), _string(fields, "activity"))
        if pair not in SET_PRESENCE_PAIRS:
            raise GraphError(
                400, "BadRequest", f"The availability/activity pair {pair} is not supported."
            )
        seconds = SESSION_DEFAULT
        if fields.get("expirationDuration") is not None:
            seconds = _duration(fields["expirationDuration"])
            if not SESSION_MIN <= seconds <= SESSION_MAX:
                raise GraphError(400, "BadRequest", "expirationDuration must be from PT5M to PT4H.")
        now = time.monotonic()
        with self.directory.lock:
            state = self._presence.setdefault(user_id, UserPresence())
            state.sessions[session_id] = Session(
                *pair, now, now + seconds, datetime.now(UTC) + timedelta(seconds=seconds)
            )
            self._publish(user_id)
        return user_id

    async def _clear_presence(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        user_id = self._session_writer(caller, match)
        session_id = _string(_object(body), "sessionId")
        with self.directory.lock:
            state = self._presence.get(user_id)
            session = state.sessions.pop(session_id, None) if state is not None else None
            if session is None or session.expires_at <= time.monotonic():
                raise GraphError(404, "NotFound", f"No presence session {session_id}.")
            self._publish(user_id)
        return Answer(200)

    def _preferred_writer(self, caller: Caller, match: Mapping[str, str]) -> str:
        user_id = self._target_user(caller, match)
        allowed = (caller.is_app and caller.has("Presence.ReadWrite.All")) or (
            caller.user_id == user_id and caller.has("Presence.ReadWrite")
        )
        if not allowed:
            raise _forbidden()
        self._count_presence_request(caller)
        return user_id

    async def _set_preferred(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        user_id = self._preferred_writer(caller, match)
        fields = _object(body)
        pair = (_string(fields, "availability"), _string(fields, "activity"))
        if pair not in PREFERRED_PAIRS:
            raise GraphError(
                400, "BadRequest", f"The availability/activity pair {pair} is not supported."
            )
        seconds = 86400.0 if pair[0] in ("DoNotDisturb", "Busy") else 7 * 86400.0
        if fields.get("expirationDuration") is not None:
            seconds = _duration(fields["expirationDuration"])
        with self.directory.lock:
            state = self._presence.setdefault(user_id, UserPresence())
            state.preferred = Preferred(
                *pair,
                time.monotonic() + seconds,
                datetime.now(UTC) + timedelta(seconds=seconds),
            )
            self._publish(user_id)
        return Answer(200)

    async def _clear_preferred(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        user_id = self._preferred_writer(caller, match)
        with self.directory.lock:
            state = self._presence.get(user_id)
            if state is not None:
                state.preferred = None
                self._publish(user_id)
        return Answer(200)

    # Subscriptions

    def _granted_expiry(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
        try:
            requested = parse_graph_time(value)
        except ValueError:
            raise GraphError(
                400, "InvalidRequest", f"expirationDateTime {value!r} is not valid."
            ) from None
        now = datetime.now(UTC)
        if requested <= now:
            raise GraphError(
                400, "InvalidRequest", "Subscription expiration can only be in the future."
            )
        if requested > now + timedelta(minutes=MAX_SUBSCRIPTION_MINUTES):
            raise GraphError(
                400,
                "InvalidRequest",
                f"Subscription expiration can only be {MAX_SUBSCRIPTION_MINUTES} minutes in "
                "the future.",
            )
        return min(requested, now + timedelta(minutes=self.max_subscription_minutes))

    def _live_subscription(self, caller: Caller, subscription_id: str) -> GraphSubscription:
        with self.directory.lock:
            subscription = self._subscriptions.get(subscription_id)
            if subscription is not None and not subscription.live():
                del self._subscriptions[subscription_id]
                subscription = None
        if subscription is None:
            raise GraphError(404, "ResourceNotFound", "The object was not found.")
        if (
            subscription.tenant_id != caller.tenant_id
            or subscription.app_id != caller.app_id
            or subscription.creator_id != caller.user_id
        ):
            raise GraphError(
                403,
                "ExtensionError",
                "Operation: Update; Exception: [Status Code: Forbidden; Reason: the "
                "subscription belongs to another user or application]",
            )
        return subscription

    def _conflict(self, caller: Caller) -> None:
        for subscription in self._subscriptions.values():
            if subscription.live() and (
                subscription.tenant_id,
                subscription.app_id,
                subscription.creator_id,
            ) == (caller.tenant_id, caller.app_id, caller.user_id):
                raise GraphError(
                    409,
                    "ExtensionError",
                    "Operation: Create; Exception: [Status Code: Conflict; Reason: a "
                    f"subscription for this user and application exists: {subscription.id}]",
                )

    async def _create_subscription(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        if caller.is_app:
            raise GraphError(
                403,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: Forbidden; Reason: presence "
                "subscriptions are not supported for application permissions]",
            )
        if not caller.has("Presence.Read.All"):
            raise _forbidden()
        fields = _object(body)
        if fields.get("changeType") != "updated":
            raise GraphError(400, "InvalidRequest", "Presence supports changeType 'updated'.")
        resource = fields.get("resource")
        user_ids = _presence_ids(resource)
        notification_url = _notification_url(fields.get("notificationUrl"), "notificationUrl")
        lifecycle_url = fields.get("lifecycleNotificationUrl")
        if lifecycle_url is not None:
            lifecycle_url = _notification_url(lifecycle_url, "lifecycleNotificationUrl")
        expires = self._granted_expiry(fields.get("expirationDateTime"))
        client_state = fields.get("clientState")
        if client_state is not None and (
            not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE
        ):
            raise GraphError(400, "InvalidRequest", "clientState is at most 128 characters.")
        certificate = certificate_b64 = certificate_id = None
        if fields.get("includeResourceData") is True:
            certificate_b64 = fields.get("encryptionCertificate")
            certificate_id = fields.get("encryptionCertificateId")
            if not isinstance(certificate_b64, str) or not isinstance(certificate_id, str):
                raise GraphError(
                    400,
                    "InvalidRequest",
                    "encryptionCertificate and encryptionCertificateId are required when "
                    "includeResourceData is true.",
                )
            certificate = _certificate(certificate_b64)
        with self.directory.lock:
            self._conflict(caller)
        for url in filter(None, (notification_url, lifecycle_url)):
            if not await self._validate_endpoint(url):
                raise GraphError(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must "
                    "respond with 200 OK to validation request.",
                )
        assert caller.user_id is not None
        assert isinstance(resource, str)
        subscription = GraphSubscription(
            str(uuid.uuid4()),
            caller.tenant_id,
            caller.app_id,
            caller.user_id,
            resource,
            user_ids,
            notification_url,
            lifecycle_url,
            client_state,
            expires,
            certificate,
            certificate_b64,
            certificate_id,
        )
        with self.directory.lock:
            self._conflict(caller)
            self._subscriptions[subscription.id] = subscription
        await asyncio.sleep(self.create_latency)
        context = f"{GRAPH_RESOURCE}/v1.0/$metadata#subscriptions/$entity"
        return Answer(201, {"@odata.context": context, **subscription.as_json()})

    async def _validate_endpoint(self, url: str) -> bool:
        """Graph's validation handshake: the endpoint must echo the token as text/plain."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote_plus(token)}"
        record: dict[str, Any] = {"url": url, "token": token, "status": None, "ok": False}
        if self.unanswered_validations > 0:
            self.unanswered_validations -= 1
            record["error"] = "TimeoutError"
            self.validations.append(record)
            return False
        started = time.monotonic()
        try:
            async with httpx2.AsyncClient(timeout=self.notification_timeout) as client:
                response = await asyncio.wait_for(
                    client.post(
                        target, content=b"", headers={"Content-Type": "text/plain; charset=utf-8"}
                    ),
                    self.notification_timeout,
                )
            content_type = response.headers.get("content-type", "").split(";")[0].strip()
            record["status"] = response.status_code
            record["ok"] = (
                response.status_code == 200
                and content_type.lower() == "text/plain"
                and response.text == token
            )
        except (httpx2.HTTPError, TimeoutError) as exc:
            record["error"] = type(exc).__name__
        record["elapsed"] = time.monotonic() - started
        self.validations.append(record)
        return bool(record["ok"])

    async def _list_subscriptions(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        with self.directory.lock:
            value = [
                s.as_json()
                for s in self._subscriptions.values()
                if s.live()
                and (s.tenant_id, s.app_id) == (caller.tenant_id, caller.app_id)
                and (caller.is_app or s.creator_id == caller.user_id)
            ]
        context = f"{GRAPH_RESOURCE}/v1.0/$metadata#subscriptions"
        return Answer(200, {"@odata.context": context, "value": value})

    async def _get_subscription(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        subscription = self._live_subscription(caller, match["id"])
        return Answer(200, subscription.as_json())

    async def _renew_subscription(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        subscription = self._live_subscription(caller, match["id"])
        fields = _object(body)
        unsupported = set(fields) - {"expirationDateTime"}
        if unsupported:
            raise GraphError(
                400, "InvalidRequest", f"This fake renews only: {sorted(unsupported)} given."
            )
        expires = self._granted_expiry(fields.get("expirationDateTime"))
        with self.directory.lock:
            subscription.expires = expires
        context = f"{GRAPH_RESOURCE}/v1.0/$metadata#subscriptions/$entity"
        return Answer(200, {"@odata.context": context, **subscription.as_json()})

    async def _delete_subscription(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        subscription = self._live_subscription(caller, match["id"])
        with self.directory.lock:
            self._subscriptions.pop(subscription.id, None)
        return Answer(204)

    async def _reauthorize_subscription(
        self, caller: Caller, match: dict[str, str], query: Mapping[str, str], body: Any
    ) -> Answer:
        subscription = self._live_subscription(caller, match["id"])
        with self.directory.lock:
            subscription.reauthorized += 1
            self.reauthorizations.append(subscription.id)
        return Answer(200)


def _unauthenticated(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message, UNAUTHENTICATED)


def _forbidden(code: str = "Forbidden") -> GraphError:
    return GraphError(403, code, "Insufficient privileges to complete the operation.")


def _too_many(wait: str) -> GraphError:
    return GraphError(
        429,
        "TooManyRequests",
        "Too many requests from this application for presence; please try again later.",
        {"Retry-After": wait},
    )


def _json_body(raw: bytes, content_type: str | None) -> Any:
    if not raw.strip():
        return None
    unreadable = GraphError(
        400,
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and "
        "payload is of valid JSON format.",
    )
    if not (content_type or "").lower().startswith("application/json"):
        raise unreadable
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise unreadable from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    return body


def _string(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise GraphError(400, "BadRequest", f"'{name}' is required.")
    return value


def _duration(value: Any) -> float:
    invalid = GraphError(400, "BadRequest", f"{value!r} is not an ISO 8601 duration.")
    if not isinstance(value, str):
        raise invalid
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise invalid from None
    if seconds <= 0:
        raise GraphError(400, "BadRequest", "expirationDuration must be positive.")
    return seconds


def _presence_ids(resource: Any) -> frozenset[str]:
    """The user ids of a presence subscription's resource, checked as Graph does."""
    if not isinstance(resource, str):
        raise GraphError(400, "InvalidRequest", "resource is required.")
    single = PRESENCE_SINGLE.fullmatch(resource)
    many = PRESENCE_FILTER.fullmatch(resource)
    if single is not None:
        ids = [single.group("id")]
    elif many is not None:
        ids = [part.strip() for part in many.group("ids").split(",")]
        if not all(len(part) > 2 and part[0] == part[-1] == "'" for part in ids):
            raise GraphError(400, "InvalidRequest", f"Invalid filter in resource {resource!r}.")
        ids = [part[1:-1] for part in ids]
    else:
        raise GraphError(
            400,
            "InvalidRequest",
            f"Unsupported resource {resource!r}: use /communications/presences?$filter=id in "
            "('id1','id2') or /communications/presences/{id}.",
        )
    if not all(GUID.fullmatch(user_id) for user_id in ids):
        raise GraphError(400, "InvalidRequest", "Presence ids must be user object ids.")
    if len(ids) > MAX_PRESENCE_IDS:
        raise GraphError(
            400,
            "InvalidRequest",
            f"The resource names {len(ids)} users: at most {MAX_PRESENCE_IDS} are allowed.",
        )
    return frozenset(user_id.lower() for user_id in ids)


def _notification_url(value: Any, name: str) -> str:
    """An https URL (or http to this machine, for tests), as Graph requires."""
    if not isinstance(value, str):
        raise GraphError(400, "InvalidRequest", f"{name} is required.")
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise GraphError(400, "InvalidRequest", f"Invalid {name} {value!r}: https is required.")
    return value


def _certificate(value: str) -> x509.Certificate:
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode(value, validate=True))
    except ValueError:
        raise GraphError(
            400, "InvalidRequest", "encryptionCertificate is not a base64 DER certificate."
        ) from None
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        raise GraphError(400, "InvalidRequest", "encryptionCertificate needs an RSA key.")
    return certificate


def ids_resource(user_ids: Iterable[str]) -> str:
    """The subscription resource for these users' presence."""
    return "/communications/presences?$filter=id in ({})".format(
        ",".join(f"'{user_id}'" for user_id in user_ids)
    )
