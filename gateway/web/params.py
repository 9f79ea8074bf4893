"""Query parameters: integers and date-times, refused with an actionable 400.

Date-times must be storable by every backend: a time whose UTC value falls outside
years 1 to 9999 (``0001-01-01T00:00:00+14:00``) cannot be compared by PostgreSQL or
Python and is refused rather than answered with a server error.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request

from gateway.web.errors import InvalidValue, shown

# The largest integer every backend stores and compares (PostgreSQL's BIGINT).
MAX_INT = 2**63 - 1
MAX_INT_DIGITS = 19
# What an integer of more significant digits reads as (with its sign): beyond every
# bound applied to one, and never handed to int(), which refuses over 4,300 digits.
HUGE: int = 10**MAX_INT_DIGITS
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


def saturating_int(raw: str, name: str) -> int:
    """A decimal integer of any size; beyond 19 significant digits it reads as ±10**19.

    For parameters read the RFC 7644 way (out of range is clamped, not refused); 400
    naming the parameter when ``raw`` is not an integer at all.
    """
    text = raw.strip()
    digits = text[1:] if text[:1] in {"+", "-"} else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise InvalidValue(f"{name} must be an integer, got {shown(raw)!r}.")
    sign = -1 if text.startswith("-") else 1
    significant = digits.lstrip("0") or "0"
    if len(significant) > MAX_INT_DIGITS:
        return sign * HUGE
    return sign * int(significant)


def parse_int(raw: str, name: str) -> int:
    """A decimal integer of at most 19 significant digits, or 400 naming the parameter."""
    value = saturating_int(raw, name)
    if abs(value) >= HUGE:
        raise InvalidValue(f"{name} must be an integer, got {shown(raw)!r}.")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An optional integer query parameter within ``low``..``high`` (400 outside)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = parse_int(raw, name)
    if not low <= value <= high:
        raise InvalidValue(f"{name} must be between {low} and {high}.")
    return value


def query_bool(request: Request, name: str) -> bool:
    """A boolean parameter, false when absent: true/false (or 1/0), else 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise InvalidValue(f"{name} must be true or false.")
