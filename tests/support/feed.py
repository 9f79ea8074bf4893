"""Reading an account's feed as a CloudLink consumer does, and knowing when it is complete.

On PostgreSQL the feed shows an event once every older transaction of the server has
ended (decision 0011): right after a write, or while another test's transaction is open
on the same server, it may not show yet what the history (``/events``, by ``seq``, every
committed event at once) already lists. A test that reads "the feed" means every event
committed so far: ``settled`` waits for that, and ``follow`` reads on until it has it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Page = Callable[[str], dict[str, Any]]
Committed = Callable[[], set[str]]
SETTLE_SECONDS = 30.0


def history_ids(page: Page) -> Committed:
    """The ids of every committed event, from pages of the history (``page(cursor)``,
    with "" for the first)."""

    def ids() -> set[str]:
        found: set[str] = set()
        cursor = ""
        while True:
            answer = page(cursor)
            found.update(item["id"] for item in answer["items"])
            cursor = answer["next_cursor"]
            if not cursor:
                return found

    return ids


def of_account(api: Callable[[str, str], Any]) -> tuple[Page, Committed]:
    """The feed's pages and the committed ids of one account, through ``api(method, path)``
    (a path after the account's, answering an httpx response)."""

    def page(cursor: str) -> dict[str, Any]:
        answer: dict[str, Any] = api("GET", f"/feed?after={cursor}&limit=500").json()
        return answer

    def history(cursor: str) -> dict[str, Any]:
        after = f"&cursor={cursor}" if cursor else ""
        answer: dict[str, Any] = api("GET", f"/events?limit=500{after}").json()
        return answer

    return page, history_ids(history)


def _missing(items: list[dict[str, Any]], wanted: set[str]) -> set[str]:
    return wanted - {item["id"] for item in items}


def follow(
    page: Page, done: threading.Event, committed: Committed | None = None
) -> list[dict[str, Any]]:
    """Read pages from cursor "0" until ``done`` is set, a page comes back empty and every
    event ``committed`` lists (read once ``done`` is set) has been read."""
    seen: list[dict[str, Any]] = []
    cursor = "0"
    wanted: set[str] | None = None
    deadline = float("inf")
    while True:
        finished = done.is_set()
        if finished and wanted is None:
            wanted = committed() if committed is not None else set()
            deadline = time.monotonic() + SETTLE_SECONDS
        found = page(cursor)
        seen.extend(found["items"])
        cursor = found["next_cursor"]
        if finished and not found["items"]:
            if not _missing(seen, wanted or set()):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"the feed never showed {_missing(seen, wanted or set())}")
            time.sleep(0.02)


def settled(page: Page, committed: Committed) -> list[dict[str, Any]]:
    """Every event of the feed from the start, once it shows every event committed before
    the call."""
    wanted = committed()
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        items = read_all(page)
        if not _missing(items, wanted):
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"the feed never showed {_missing(items, wanted)}")
        time.sleep(0.02)


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
