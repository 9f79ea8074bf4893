"""Secrets: bearer tokens (kept only as hashes) and encryption of secrets the gateway reuses.

Bearer tokens are 256-bit random strings, so a single SHA-256 is a sound verifier: a
slow password hash buys nothing against a guess space that large and would cost every
request milliseconds. Comparison is constant-time. Secrets the gateway must send on
(later: provider tokens, client secrets) are encrypted with Fernet under a ring of keys,
newest first, so keys rotate without re-encrypting everything at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh, URL-safe, 256-bit bearer token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str | bytes) -> str:
    """The hex SHA-256 of ``token``: what is stored in place of the token."""
    raw = token if isinstance(token, bytes) else token.encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def token_matches(token: str | bytes, digest: str) -> bool:
    """Constant-time check of a presented token (as sent) against a stored digest.

    An empty token or digest never matches: a row whose secret was never set must not
    open to a caller that sends nothing.
    """
    return bool(token) and bool(digest) and hmac.compare_digest(token_digest(token), digest)


class SecretBoxError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


class SecretBox:
    """Encrypts secrets at rest with the configured key ring (newest key first)."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._fernet = (
            MultiFernet([Fernet(key.get_secret_value().encode()) for key in keys]) if keys else None
        )
        # Keys for signing links (one per key of the ring, derived so that no signature
        # says anything of the encryption key).
        self._signing = [
            hmac.new(key.get_secret_value().encode(), b"signed links", hashlib.sha256).digest()
            for key in keys
        ]

    def sign(self, message: str) -> str:
        """An HMAC-SHA256 of ``message`` under the newest key (URL-safe base64)."""
        if not self._signing:
            raise SecretBoxError("no key configured to sign with: set GATEWAY_SECRET_KEYS")
        return _mac(self._signing[0], message)

    def verify(self, message: str, signature: str) -> bool:
        """Whether ``signature`` signs ``message`` under any key of the ring (constant
        time per key), so that links signed before a rotation stay good."""
        return any(
            hmac.compare_digest(_mac(key, message).encode(), signature.encode())
            for key in self._signing
        )

    @property
    def configured(self) -> bool:
        """Whether any key is configured; secrets cannot be stored without one."""
        return self._fernet is not None

    def encrypt(self, plaintext: str) -> str:
        """Encrypt with the newest key."""
        if self._fernet is None:
            raise SecretBoxError(
                "no encryption key configured: set GATEWAY_SECRET_KEYS "
                "(generate one with `cloudlink-gateway generate-key`)"
            )
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """Decrypt with whichever configured key encrypted it."""
        if self._fernet is None:
            raise SecretBoxError("no encryption key configured: set GATEWAY_SECRET_KEYS")
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise SecretBoxError(
                "stored secret does not decrypt with any key in GATEWAY_SECRET_KEYS"
            ) from exc


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def generate_key() -> str:
    """A new Fernet key for GATEWAY_SECRET_KEYS."""
    return Fernet.generate_key().decode("ascii")
