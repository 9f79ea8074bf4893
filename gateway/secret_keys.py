"""Where the keys that encrypt stored secrets come from.

``GATEWAY_SECRET_KEYS`` wins when set. On the embedded default (SQLite in the data
directory) an unset variable means a key file beside the database, created on first
use with owner-only permissions: ``make run`` followed by ``integration set-twilio``
needs no other step, and the server and the CLI, which share the data directory, share
the key. With PostgreSQL the gateway may run as several replicas that must all decrypt
the same rows, so the key has to come from the environment, and its absence stops the
process at start.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from pydantic import SecretStr

from gateway.security import generate_key
from gateway.settings import Settings

KEY_FILE = "secret.key"

log = structlog.get_logger("gateway.secret_keys")


class MissingSecretKeys(Exception):
    """No key is configured and none may be created (a database server is in use)."""


def key_file(settings: Settings) -> Path:
    """The key file of the embedded default."""
    return settings.data_dir / KEY_FILE


def load_secret_keys(settings: Settings) -> list[SecretStr]:
    """The key ring: the environment's, else (embedded default only) the key file's."""
    if settings.secret_keys:
        return list(settings.secret_keys)
    if not settings.embedded:
        raise MissingSecretKeys(
            "GATEWAY_SECRET_KEYS is not set. With PostgreSQL every replica must decrypt the "
            "same stored secrets, so the key comes from the environment: generate one with "
            "`cloudlink-gateway generate-key` and set it on every replica."
        )
    path = key_file(settings)
    if not path.exists():
        _create(path)
    key = path.read_text(encoding="ascii").strip()
    return [SecretStr(key)]


def _create(path: Path) -> None:
    """Write a new key with owner-only permissions; a concurrent creator's file wins.

    The key is written to a private temporary file first and then linked into place,
    so another process never reads a half-written key.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(generate_key() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        return
    finally:
        temporary.unlink()
    log.warning(
        "secret_key_file_created",
        path=str(path),
        advice="back this file up with the database: stored provider secrets cannot be "
        "decrypted without it (or set GATEWAY_SECRET_KEYS to its content)",
    )
