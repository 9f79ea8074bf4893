"""The SCIM credential lookup, with a cache that can never serve a replaced token."""

from __future__ import annotations

from gateway.scim import repository as repo
from storage.engine import Database


class CredentialCache:
    """Token digests by account, trusted only while the database has not changed.

    On SQLite, ``data_version`` moves with every commit of any other connection (this
    process's writer, the CLI in another process), so a regenerated or revoked token
    is refused from the next request on, and lookups of an unchanged database skip a
    query. Without ``data_version`` (PostgreSQL) every request reads the digest.
    """

    def __init__(self) -> None:
        self._version: int | None = None
        self._digests: dict[str, str | None] = {}

    def digest(self, db: Database, account_id: str) -> str | None:
        """The stored digest of the account's token (None: no credential)."""
        version = db.data_version()
        if version is None or version != self._version:
            self._digests.clear()
            self._version = version
        elif account_id in self._digests:
            return self._digests[account_id]
        with db.read() as conn:
            digest = repo.credential_digest(conn, account_id)
        if version is not None:
            self._digests[account_id] = digest
        return digest
