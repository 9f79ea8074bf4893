"""Why the database could not take a unit of work right now: the caller should retry.

These are not bugs and not the caller's fault: another process holds the write lock
past the configured wait, or the server is out of reach. The web layer answers them
503 with ``Retry-After`` (which Entra and the other callers honour); nothing of the
unit was written.
"""

from __future__ import annotations

# PostgreSQL SQLSTATEs that mean "try again": lock_not_available (lock_timeout),
# deadlock_detected, serialization_failure.
PG_RETRYABLE = frozenset({"55P03", "40P01", "40001"})


class DatabaseUnavailable(Exception):
    """The database cannot take the work now; nothing of it was written."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after

    @classmethod
    def unreachable(cls, retry_after: int) -> DatabaseUnavailable:
        """The database server cannot be reached (refused, gone, restarting)."""
        return cls(
            f"The database cannot be reached; retry after {retry_after} s.",
            retry_after=retry_after,
        )


class DatabaseBusy(DatabaseUnavailable):
    """The write lock was not free within the configured wait."""

    @classmethod
    def waited(cls, what: str, retry_after: int) -> DatabaseBusy:
        """The error for ``what`` kept the work waiting too long."""
        return cls(
            f"{what}; retry after {retry_after} s. Nothing was written.", retry_after=retry_after
        )
