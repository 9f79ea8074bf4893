"""Following an account's feed while writes go on, as a CloudLink consumer does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Page = Callable[[str], dict[str, Any]]


def follow(page: Page, done: threading.Event) -> list[dict[str, Any]]:
    """Read pages from cursor "0" until ``done`` is set and a page comes back empty."""
    seen: list[dict[str, Any]] = []
    cursor = "0"
    while True:
        finished = done.is_set()
        found = page(cursor)
        seen.extend(found["items"])
        cursor = found["next_cursor"]
        if finished and not found["items"]:
            return seen


def positions(items: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    """The feed positions of ``items`` (``SEQ`` or ``TX.SEQ`` cursors), comparable."""
    return [tuple(int(part) for part in str(item["cursor"]).split(".")) for item in items]


def read_all(page: Page) -> list[dict[str, Any]]:
    """Every event of the feed from the start, in order."""
    items: list[dict[str, Any]] = []
    cursor = "0"
    while True:
        found = page(cursor)
        items.extend(found["items"])
        if not found["items"]:
            return items
        cursor = found["next_cursor"]
