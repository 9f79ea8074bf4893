"""The memory of where pages began: nearest position below, forgotten on a removal, bounded."""

from __future__ import annotations

from gateway.scim.positions import Positions


def test_the_nearest_position_below_the_offset_is_found() -> None:
    positions = Positions()
    positions.remember("a", 0, 9, 110)
    positions.remember("a", 0, 19, 120)
    assert positions.before("a", 0, 20) == (19, 120)
    assert positions.before("a", 0, 19) == (9, 110)
    assert positions.before("a", 0, 9) is None
    assert positions.before("b", 0, 20) is None


def test_a_removal_since_forgets_the_accounts_positions() -> None:
    positions = Positions()
    positions.remember("a", 0, 9, 110)
    assert positions.before("a", 1, 20) is None
    positions.remember("a", 1, 9, 111)
    assert positions.before("a", 1, 20) == (9, 111)
    assert positions.before("a", 0, 20) is None


def test_memory_is_bounded_per_account_and_in_accounts() -> None:
    positions = Positions(accounts=2, per_account=3)
    for index in range(9, 60, 10):
        positions.remember("a", 0, index, index + 100)
    # The lowest positions went first.
    assert positions.before("a", 0, 30) is None
    assert positions.before("a", 0, 60) == (59, 159)
    positions.remember("b", 0, 9, 1)
    positions.remember("c", 0, 9, 2)
    assert positions.before("a", 0, 60) is None
    assert positions.before("c", 0, 10) == (9, 2)


def test_a_position_below_every_remembered_one_is_let_go_when_memory_is_full() -> None:
    """A full account's memory given a position lower than all it holds (a deep page's
    block starts after pages near the end) drops that one, the lowest, and nothing fails."""
    positions = Positions(per_account=3)
    for index in (100, 200, 300):
        positions.remember("a", 0, index, index + 1000)
    positions.remember("a", 0, 50, 1050)
    assert positions.before("a", 0, 101) == (100, 1100)
    assert positions.before("a", 0, 99) is None
    positions.remember("a", 0, 400, 1400)
    assert positions.before("a", 0, 150) is None
    assert positions.before("a", 0, 401) == (400, 1400)
