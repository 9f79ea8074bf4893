"""Which monitor watches which Teams user: a rule on plain values, apart from the database.

A monitor's subscription names its users, and replacing it costs a Graph call and a short
gap in notifications, so the rule keeps users where they are and only fills: a user stays
on a monitor that is still live and has room, everyone else goes to the least loaded
monitor in turn, and nobody already watched is moved to even out the load. When every
monitor is full, the rest are reported unwatched (the configuration check asks for more
monitors), never left out of the answer.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

M = TypeVar("M", bound=Hashable)
U = TypeVar("U", bound=Hashable)


@dataclass(frozen=True)
class Assignment(Generic[M, U]):
    """Each live monitor's users, and the users no monitor has room for.

    ``watched`` holds every monitor given, in the order given, each with its users in the
    order they were served; its lengths are the monitors' user counts.
    """

    watched: dict[M, list[U]]
    unwatched: list[U]

    def monitor_of(self) -> dict[U, M]:
        """Each watched user's monitor (an unwatched user is absent)."""
        return {user: monitor for monitor, users in self.watched.items() for user in users}


def assign(monitors: Sequence[M], users: Mapping[U, M | None], capacity: int) -> Assignment[M, U]:
    """Spread ``users`` (each with the monitor it is on now, or None) over ``monitors``.

    The mapping's order is the order users are served in: when a monitor holds more users
    than it has room for, the first keep their place, and users without a place are given
    one first come, first served. A place goes to the monitor with the fewest users, the
    earlier in ``monitors`` on a tie. A current monitor missing from ``monitors`` (no longer
    live) counts as none.
    """
    load: dict[M, list[U]] = {monitor: [] for monitor in monitors}
    waiting: list[U] = []
    for user, current in users.items():
        if current is not None and current in load and len(load[current]) < capacity:
            load[current].append(user)
        else:
            waiting.append(user)
    for served, user in enumerate(waiting):
        roomiest = min(load, key=lambda monitor: len(load[monitor]), default=None)
        if roomiest is None or len(load[roomiest]) >= capacity:
            return Assignment(load, waiting[served:])
        load[roomiest].append(user)
    return Assignment(load, [])


def moves(before: Mapping[U, M | None], after: Assignment[M, U]) -> dict[U, M | None]:
    """The users of ``before`` whose monitor differs in ``after``, each with its new one.

    A user of ``before`` that ``after`` does not know (no longer to be watched) moves to None.
    """
    monitor_of: dict[U, M | None] = dict(after.monitor_of())
    return {
        user: monitor_of.get(user)
        for user, monitor in before.items()
        if monitor_of.get(user) != monitor
    }
