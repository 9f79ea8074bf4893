"""Teams users spread over presence monitors: the rule alone, on generated monitors and users.

The rule only fills: a user stays where it is while its monitor is live and has room, and
nobody watched is moved to even out the load, so a monitor added takes the unwatched users
and no one else.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.presence.jobs.assignment import Assignment, assign, moves

QUICK = settings(max_examples=100, deadline=None)


@dataclass(frozen=True)
class Setting:
    """Live monitors, users in the order they are served with their current monitor, room."""

    monitors: list[str]
    users: dict[str, str | None]
    capacity: int


@st.composite
def settings_(draw: st.DrawFn) -> Setting:
    """Up to six live monitors, a few gone, and up to forty users on any of them or none."""
    names = draw(st.lists(st.integers(0, 9), unique=True, max_size=8))
    monitors = [f"m{name}" for name in names]
    live = draw(st.lists(st.sampled_from(monitors), unique=True, max_size=6)) if monitors else []
    capacity = draw(st.integers(0, 6))
    count = draw(st.integers(0, 40))
    current = st.sampled_from([None, *monitors])
    users = {f"u{n:02}": draw(current) for n in draw(st.permutations(range(count)))}
    return Setting(live, users, capacity)


@st.composite
def settled(draw: st.DrawFn) -> tuple[Setting, Assignment[str, str]]:
    """A setting whose users are where the rule put them, with that assignment."""
    setting = draw(settings_())
    result = assign(setting.monitors, setting.users, setting.capacity)
    return _after(setting, result), result


def _after(setting: Setting, result: Assignment[str, str]) -> Setting:
    """The same setting with every user on the monitor ``result`` gave it."""
    monitor_of = result.monitor_of()
    users = {user: monitor_of.get(user) for user in setting.users}
    return Setting(setting.monitors, users, setting.capacity)


def _state(result: Assignment[str, str]) -> dict[str, str | None]:
    """Each user's monitor, None for the unwatched."""
    return {**dict.fromkeys(result.unwatched), **result.monitor_of()}


@QUICK
@given(setting=settings_())
def test_every_user_is_watched_once_or_reported_unwatched(setting: Setting) -> None:
    """Every user is on exactly one monitor or in the unwatched list, none is left out."""
    result = assign(setting.monitors, setting.users, setting.capacity)
    placed = [user for users in result.watched.values() for user in users]
    assert len(placed) == len(set(placed))
    assert set(placed).isdisjoint(result.unwatched)
    assert sorted([*placed, *result.unwatched]) == sorted(setting.users)
    assert len(placed) == min(len(setting.users), setting.capacity * len(setting.monitors))


@QUICK
@given(setting=settings_())
def test_no_monitor_holds_more_than_its_capacity(setting: Setting) -> None:
    """Each live monitor is given at most ``capacity`` users, and no other monitor any."""
    result = assign(setting.monitors, setting.users, setting.capacity)
    assert list(result.watched) == setting.monitors
    assert all(len(users) <= setting.capacity for users in result.watched.values())


@QUICK
@given(setting=settings_())
def test_users_are_unwatched_only_when_every_monitor_is_full(setting: Setting) -> None:
    """A user is reported unwatched only when no live monitor has room left."""
    result = assign(setting.monitors, setting.users, setting.capacity)
    if result.unwatched:
        assert all(len(users) == setting.capacity for users in result.watched.values())


@QUICK
@given(setting=settings_())
def test_a_user_keeps_a_live_monitor_with_room(setting: Setting) -> None:
    """When no live monitor holds more users than its capacity, each of them stays on it."""
    on = [monitor for monitor in setting.users.values() if monitor in setting.monitors]
    if any(on.count(monitor) > setting.capacity for monitor in set(on)):
        return
    monitor_of = assign(setting.monitors, setting.users, setting.capacity).monitor_of()
    for user, monitor in setting.users.items():
        if monitor in setting.monitors:
            assert monitor_of[user] == monitor


@QUICK
@given(setting=settings_())
def test_a_second_assignment_moves_nobody(setting: Setting) -> None:
    """Assigning again what the rule assigned, with the same monitors and users, moves nobody."""
    first = assign(setting.monitors, setting.users, setting.capacity)
    again = _after(setting, first)
    second = assign(again.monitors, again.users, again.capacity)
    assert moves(again.users, second) == {}
    assert second.unwatched == first.unwatched


@QUICK
@given(start=settled(), data=st.data())
def test_a_user_added_moves_no_one_else(
    start: tuple[Setting, Assignment[str, str]], data: st.DataObject
) -> None:
    """A new user, wherever it falls in the order, changes no other user's monitor."""
    setting, before = start
    order = list(setting.users.items())
    order.insert(data.draw(st.integers(0, len(order))), ("new", None))
    result = assign(setting.monitors, dict(order), setting.capacity)
    after = _state(result)
    assert after.pop("new", "dropped") != "dropped"
    assert after == _state(before)


@QUICK
@given(start=settled(), data=st.data())
def test_a_monitor_added_takes_the_unwatched_and_moves_nobody_watched(
    start: tuple[Setting, Assignment[str, str]], data: st.DataObject
) -> None:
    """A new monitor takes unwatched users, first served first, and no watched user moves."""
    setting, before = start
    monitors = list(setting.monitors)
    monitors.insert(data.draw(st.integers(0, len(monitors))), "added")
    result = assign(monitors, setting.users, setting.capacity)
    assert result.watched["added"] == before.unwatched[: setting.capacity]
    assert result.unwatched == before.unwatched[setting.capacity :]
    monitor_of = result.monitor_of()
    assert all(monitor_of[user] == monitor for user, monitor in before.monitor_of().items())
    assert set(moves(setting.users, result)) == set(result.watched["added"])


@QUICK
@given(start=settled(), data=st.data())
def test_a_monitor_removed_moves_only_its_users(
    start: tuple[Setting, Assignment[str, str]], data: st.DataObject
) -> None:
    """Only the users of a monitor no longer live move, onto what room the others have left."""
    setting, before = start
    if not setting.monitors:
        return
    gone = data.draw(st.sampled_from(setting.monitors))
    remaining = [monitor for monitor in setting.monitors if monitor != gone]
    result = assign(remaining, setting.users, setting.capacity)
    assert set(moves(setting.users, result)) <= set(before.watched[gone])
    room = sum(setting.capacity - len(before.watched[monitor]) for monitor in remaining)
    rehomed = [user for user in before.watched[gone] if user in result.monitor_of()]
    assert len(rehomed) == min(len(before.watched[gone]), room)


@QUICK
@given(setting=settings_())
def test_the_same_input_gives_the_same_assignment(setting: Setting) -> None:
    """Two assignments of equal monitors and users agree, down to the order of each list."""
    first = assign(list(setting.monitors), dict(setting.users), setting.capacity)
    second = assign(list(setting.monitors), dict(setting.users), setting.capacity)
    assert list(first.watched.items()) == list(second.watched.items())
    assert first.unwatched == second.unwatched


def test_a_user_without_a_place_goes_to_the_least_loaded_monitor() -> None:
    """Users without a place fill the monitor with the fewest users, the earliest on a tie."""
    result = assign(["a", "b", "c"], {"x": "a", "y": "c", "p": None, "q": None, "r": None}, 5)
    assert result.watched == {"a": ["x", "q"], "b": ["p", "r"], "c": ["y"]}


def test_a_monitor_over_capacity_keeps_its_first_users() -> None:
    """A monitor holding more users than its capacity keeps the first served; the rest move."""
    result = assign(["a", "b"], {"x": "a", "y": "a", "z": "a"}, 2)
    assert result.watched == {"a": ["x", "y"], "b": ["z"]}
    assert result.unwatched == []


def test_the_last_served_are_unwatched_when_room_runs_out() -> None:
    """When every monitor is full, the users served last are the ones reported unwatched."""
    result = assign(["a"], {"x": None, "y": "gone", "z": "a"}, 2)
    assert result.watched == {"a": ["z", "x"]}
    assert result.unwatched == ["y"]


def test_without_live_monitors_every_user_is_unwatched() -> None:
    """With no live monitor, every user is reported unwatched, whatever it was on."""
    result = assign([], {"x": "gone", "y": None}, 650)
    assert result == Assignment({}, ["x", "y"])


def test_a_user_no_longer_assigned_moves_to_none() -> None:
    """A user the assignment does not know, or leaves unwatched, moves to no monitor."""
    result = assign(["a"], {"x": "a", "y": None}, 1)
    assert moves({"x": "a", "y": "b", "released": "a"}, result) == {"y": None, "released": None}
