"""The comparison key of case-insensitive identifiers (user names, email addresses).

One definition for every feature that matches a user by name or address (SCIM's
uniqueness claims, presence's email lookup), so the two can never disagree.
"""

from __future__ import annotations

import unicodedata


def fold(value: str) -> str:
    """The comparison key of a case-insensitive string: NFKC, case folded, stripped.

    NFKC makes compatibility forms (fullwidth letters, ligatures) the letters they stand
    for; case folding goes further than lower-casing (``ß`` is ``ss``); NFKC again
    because folding can undo the normal form. The key may be longer than the value.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return folded.strip()
