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
