"""Query parameters: integers and date-times, refused with an actionable 400.

Date-times must be storable by every backend: a time whose UTC value falls outside
years 1 to 9999 (``0001-01-01T00:00:00+14:00``) cannot be compared by PostgreSQL or
Python and is refused rather than answered with a server error.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request

from gateway.web.errors import InvalidValue

# The largest integer every backend stores and compares (PostgreSQL's BIGINT).
MAX_INT = 2**63 - 1
MAX_INT_DIGITS = 19
EXAMPLE_TIME = "2026-01-31T00:00:00Z"


def parse_iso8601(raw: str) -> datetime:
    """Parse ``raw`` (``Z`` allowed; no zone means UTC) to an aware datetime in UTC.

    ValueError if it is not one, or if its UTC value is outside years 1 to 9999.
    """
    text = raw.strip()
    if not text or len(text) > 64:
        raise ValueError("not an ISO 8601 date-time")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("the date-time is outside years 1 to 9999 in UTC") from None


def query_datetime(request: Request, name: str) -> datetime | None:
    """An optional ISO 8601 query parameter; present but empty is refused."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_iso8601(raw)
    except ValueError:
        raise InvalidValue(
            f"{name} must be an ISO 8601 date-time between years 1 and 9999 in UTC, "
            f"e.g. {EXAMPLE_TIME}."
        ) from None


def parse_int(raw: str, name: str) -> int:
    """A decimal integer of at most 19 digits, or 400 naming the parameter."""
    text = raw.strip()
    digits = text.removeprefix("-").removeprefix("+")
    if not digits.isdigit() or not digits.isascii() or len(digits) > MAX_INT_DIGITS:
        raise InvalidValue(f"{name} must be an integer, got {raw[:40]!r}.")
    return int(text)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An optional integer query parameter within ``low``..``high`` (400 outside)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = parse_int(raw, name)
    if not low <= value <= high:
        raise InvalidValue(f"{name} must be between {low} and {high}.")
    return value
