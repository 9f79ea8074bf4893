"""NUL characters are refused before they reach the database.

PostgreSQL text cannot hold NUL, and a query carrying one fails with a server error;
SQLite would store it silently. Paths and query strings are checked by each
``Surface``; decoded JSON bodies by ``reject_nul``.
"""

from __future__ import annotations

from typing import Any

from gateway.web.errors import InvalidValue

NUL_DETAIL = "Text may not contain NUL characters (\\u0000 or %00)."


def reject_nul(value: Any) -> None:
    """Raise ``InvalidValue`` if any string (key or value) of decoded JSON holds a NUL.

    Iterative, so it is safe on any depth the JSON decoder accepted.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidValue(NUL_DETAIL)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
