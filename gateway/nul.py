"""NUL characters never reach the database.

PostgreSQL text cannot hold NUL, and a query carrying one fails with a server error;
SQLite would store it silently. Values are checked after they are decoded (``%00`` in a
form or query, ``\\u0000`` in JSON), since that is what would be stored. What happens to
a NUL depends on who sent it (decision 0015):

- an operator or Entra (the admin API, SCIM, query strings, paths) is refused with 400
  ``NUL_DETAIL``: the caller can send the value again without it;
- a provider's message (Twilio, CM.com, Graph), or an answer the gateway reads from a
  provider, is kept with each NUL replaced by U+FFFD (``REPLACEMENT``): the provider will
  not send it differently, and refusing would lose what a customer wrote.

Paths and query strings are checked by each ``Surface``; decoded JSON bodies by
``gateway.web.bodies``; Twilio's form fields by its receiver; providers' answers by
``gateway.clients.http``. They share ``mend_decoded``, the one walk over decoded JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NUL = "\x00"
NUL_DETAIL = "Text may not contain NUL characters (\\u0000 or %00)."
REPLACEMENT = "\ufffd"


class TooDeep(Exception):
    """The decoded JSON nests arrays and objects deeper than allowed."""


def without_nul(text: str) -> str:
    """``text`` with every NUL replaced by U+FFFD (the same object when it has none)."""
    return text.replace(NUL, REPLACEMENT) if NUL in text else text


def mend_decoded(
    value: Any, mend: Callable[[str], str] = without_nul, *, max_depth: int | None = None
) -> Any:
    """Every key and string of decoded JSON holding a NUL, passed through ``mend`` (which
    returns the text to keep, or raises to refuse); containers are changed in place.

    Iterative, so it is safe on any depth the decoder accepted; ``TooDeep`` when
    containers nest deeper than ``max_depth``. Returns ``value`` (mended, if a string).
    """
    if isinstance(value, str):
        return mend(value) if NUL in value else value
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if max_depth is not None and depth > max_depth:
                raise TooDeep(max_depth)
            for key in [key for key in item if NUL in key]:
                item[mend(key)] = item.pop(key)
            entries: Any = list(item.items())
        elif isinstance(item, list):
            if max_depth is not None and depth > max_depth:
                raise TooDeep(max_depth)
            entries = list(enumerate(item))
        else:
            continue
        for place, child in entries:
            if isinstance(child, str):
                if NUL in child:
                    item[place] = mend(child)
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return value
