"""ISO 8601 parsing for query parameters; a time without a zone is taken as UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_iso8601(raw: str) -> datetime:
    """Parse ``raw`` (``Z`` allowed) to an aware datetime; ValueError if it is not one."""
    parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
