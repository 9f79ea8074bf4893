"""Where pages of an account's users began, so that the next page is found by seeking.

``GET /Users?startIndex=N`` lists the account's users in creation order (by ``pk``). An
``OFFSET`` steps over every index entry before the page: at a million users, the last
page took 64 ms where the first takes 2. Entra and the other SCIM clients page forward,
one page after another, so each page ends where the next begins: remembering the ``pk``
at the end of each page served lets the next start after it (``pk > remembered``) and skip
nothing. A remembered position is trusted only while no user of the account has been
removed since (the ``removed`` count of ``scim_user_counts``): removals move later users
to lower positions, while a new user, with a higher ``pk``, goes at the end and moves
nobody. The memory is per process and bounded; a page it cannot help is found by
``OFFSET`` as before, and a page the other worker served is at most a page or two back.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

ACCOUNTS = 1_000
PER_ACCOUNT = 256


@dataclass
class _Account:
    removed: int
    indexes: list[int] = field(default_factory=list)  # sorted
    pks: dict[int, int] = field(default_factory=dict)


class Positions:
    """Position in an account's list (0-based) -> ``pk`` of the user there."""

    def __init__(self, accounts: int = ACCOUNTS, per_account: int = PER_ACCOUNT) -> None:
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._max_accounts = accounts
        self._per_account = per_account
        self._lock = threading.Lock()

    def before(self, account_id: str, removed: int, offset: int) -> tuple[int, int] | None:
        """The remembered position nearest below ``offset``, and its ``pk``, if any still
        holds (``removed`` is the account's count of removals now)."""
        with self._lock:
            known = self._accounts.get(account_id)
            if known is None or known.removed != removed:
                return None
            self._accounts.move_to_end(account_id)
            at = bisect.bisect_left(known.indexes, offset)
            if at == 0:
                return None
            index = known.indexes[at - 1]
            return index, known.pks[index]

    def remember(self, account_id: str, removed: int, index: int, pk: int) -> None:
        """The user at ``index`` has ``pk``, as read when the account had ``removed``
        removals."""
        with self._lock:
            known = self._accounts.get(account_id)
            if known is None or known.removed != removed:
                known = self._accounts[account_id] = _Account(removed)
            self._accounts.move_to_end(account_id)
            if index not in known.pks:
                bisect.insort(known.indexes, index)
            known.pks[index] = pk
            if len(known.indexes) > self._per_account:
                # The lowest positions go first (clients page forward), even the one
                # just given when it is the lowest.
                known.pks.pop(known.indexes.pop(0))
            while len(self._accounts) > self._max_accounts:
                self._accounts.popitem(last=False)
