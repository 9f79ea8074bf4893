"""What the notification receiver remembers of validation tokens that verified."""

from __future__ import annotations

import time

from gateway.webhooks.graph_data import VerifiedTokens

KEY = (("token-a",), frozenset({"client"}), frozenset({"tenant"}))


def test_tokens_are_remembered_until_they_end() -> None:
    """Held while their window lasts, forgotten after it."""
    memory = VerifiedTokens()
    now = time.time()
    memory.remember(KEY, now - 10, now + 60)
    assert memory.holds(KEY)
    memory.remember(KEY, now - 10, now - 1)
    assert not memory.holds(KEY)


def test_only_the_same_tokens_for_the_same_app_and_tenant_are_held() -> None:
    """Another token, or the same token for another app or tenant, must verify on its own."""
    memory = VerifiedTokens()
    now = time.time()
    memory.remember(KEY, now - 10, now + 60)
    assert not memory.holds((("token-b",), KEY[1], KEY[2]))
    assert not memory.holds((KEY[0], frozenset({"other"}), KEY[2]))
    assert not memory.holds((KEY[0], KEY[1], frozenset({"other"})))


def test_tokens_not_yet_valid_are_not_remembered() -> None:
    """A token whose start is still ahead is checked again next time."""
    memory = VerifiedTokens()
    now = time.time()
    memory.remember(KEY, now + 30, now + 600)
    assert not memory.holds(KEY)


def test_the_memory_stays_bounded() -> None:
    """Past its limit it starts over rather than growing with every token it sees."""
    memory = VerifiedTokens()
    now = time.time()
    for n in range(VerifiedTokens.LIMIT + 5):
        memory.remember(((f"t{n}",), KEY[1], KEY[2]), now - 1, now + 60)
    assert len(memory._held) <= VerifiedTokens.LIMIT
