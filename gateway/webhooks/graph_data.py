"""Resource data in Graph's notifications: verified, then decrypted.

Anyone can encrypt with the gateway's public certificate, so the encryption proves
nothing about the sender; the ``validationTokens`` of the POST do: JWTs of Microsoft's
notification service for the account's app and tenant, checked against the identity
platform's signing keys (fetched again once when a key is unknown, as Microsoft rotates
them). Graph sends the same tokens with every POST for about an hour, so tokens that
verified are remembered, for the same app and tenant, until the first of them expires.
When they do not verify, or an item does not decrypt, its resource data is set
aside and the user's presence is read back instead: a forged POST can only make the
gateway ask Graph. RSA decryption releases the GIL and costs about 0.25 ms an item, so it
runs on threads of its own, not on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import structlog
from starlette.requests import Request

from gateway.clients.graph_crypto import (
    EncryptionCertificate,
    ResourceDataError,
    ValidationTokenError,
    decrypt_resource_data,
    verify_validation_tokens,
)
from gateway.clients.http import ProviderError
from gateway.presence.certificates import live_certificates
from gateway.web.state import app_state

log = structlog.get_logger("gateway.webhooks.graph")

CERTIFICATES_FOR = 300.0
# RSA releases the GIL; more threads than cores would only take turns at it.
DECRYPT_THREADS = 2
KEYS_TENANT = "common"


TokenKey = tuple[tuple[str, ...], frozenset[str], frozenset[str]]


class VerifiedTokens:
    """Validation tokens that verified, with the app and tenant they verified for, and
    until when they hold: a POST with the same tokens needs no signature check."""

    LIMIT = 256

    def __init__(self) -> None:
        self._held: dict[TokenKey, float] = {}

    def holds(self, key: TokenKey) -> bool:
        """Whether these tokens verified for this app and tenant and still hold."""
        until = self._held.get(key)
        if until is None:
            return False
        if until <= time.time():
            del self._held[key]
            return False
        return True

    def remember(
        self,
        key: tuple[tuple[str, ...], frozenset[str], frozenset[str]],
        since: float,
        until: float,
    ) -> None:
        """Tokens that verified just now and hold from ``since`` to ``until``."""
        if since > time.time():
            return
        if len(self._held) >= self.LIMIT:
            self._held.clear()
        self._held[key] = until


class CertificateRing:
    """The live certificates of the process, re-read every few minutes or when an item
    names one it does not have, and the threads that decrypt with them."""

    def __init__(self) -> None:
        self._certificates: list[EncryptionCertificate] = []
        self._until = 0.0
        self._pool = ThreadPoolExecutor(DECRYPT_THREADS, thread_name_prefix="graph-decrypt")

    async def decrypt(
        self, items: Sequence[dict[str, Any]], certificates: Sequence[EncryptionCertificate]
    ) -> list[dict[str, Any] | None]:
        """Each item's resource data (None when it does not decrypt), off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _decrypt_all, items, certificates)

    def close(self) -> None:
        """Stop the decryption threads (the app's lifespan ends)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def get(self, request: Request, *, fresh: bool = False) -> list[EncryptionCertificate]:
        """The certificates to decrypt with."""
        if fresh or time.monotonic() > self._until:
            state = app_state(request)
            self._certificates = await state.db.query(live_certificates, state.secrets)
            self._until = time.monotonic() + CERTIFICATES_FOR
        return self._certificates


async def _verified(request: Request, tokens: Any, watchers: Sequence[Any]) -> bool:
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        return False
    identity = app_state(request).providers.identity
    client_ids = frozenset(w.client_id for w in watchers if w.client_id)
    tenant_ids = frozenset(w.tenant_id for w in watchers if w.tenant_id)
    memory: VerifiedTokens = request.state.graph_tokens
    key = (tuple(tokens), client_ids, tenant_ids)
    if memory.holds(key):
        return True
    for fresh in (False, True):
        try:
            keys = await identity.signing_keys(KEYS_TENANT, fresh=fresh)
            since, until = verify_validation_tokens(
                tokens, keys, client_ids=client_ids, tenant_ids=tenant_ids
            )
            memory.remember(key, since, until)
        except ValidationTokenError as exc:
            if fresh:
                log.warning("graph_validation_tokens_refused", reason=str(exc)[:200])
            continue
        except ProviderError:
            log.warning("graph_signing_keys_unavailable")
            return False
        return True
    return False


def _decrypt_all(
    items: Sequence[dict[str, Any]], certificates: Sequence[EncryptionCertificate]
) -> list[dict[str, Any] | None]:
    found: list[dict[str, Any] | None] = []
    for item in items:
        try:
            found.append(decrypt_resource_data(item["encryptedContent"], certificates))
        except ResourceDataError:
            found.append(None)
    return found


Item = tuple[Any, dict[str, Any]]


async def resource_data(
    request: Request, payload: dict[str, Any], rich: list[Item]
) -> tuple[list[tuple[Any, dict[str, Any], dict[str, Any]]], list[Item]]:
    """The rich items with the presence each carries (watcher, item, presence), and the
    items to read back."""
    if not await _verified(request, payload.get("validationTokens"), [w for w, _ in rich]):
        return [], rich
    ring: CertificateRing = request.state.graph_certificates
    certificates = await ring.get(request)
    items = [item for _, item in rich]
    decrypted = await ring.decrypt(items, certificates)
    if any(found is None for found in decrypted):
        certificates = await ring.get(request, fresh=True)
        missing = [i for i, found in enumerate(decrypted) if found is None]
        again = await ring.decrypt([items[i] for i in missing], certificates)
        for index, found in zip(missing, again, strict=True):
            decrypted[index] = found
    presences: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
    unread: list[Item] = []
    for (watcher, item), found in zip(rich, decrypted, strict=True):
        if (
            found is None
            or not isinstance(found.get("id"), str)
            or b"\\u0000" in orjson.dumps(found)
        ):
            log.warning("graph_resource_data_refused")
            unread.append((watcher, item))
        else:
            presences.append((watcher, item, found))
    return presences, unread
