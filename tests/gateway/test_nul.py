"""The one walk over decoded JSON that replaces or refuses NUL characters."""

from __future__ import annotations

import orjson
import pytest

from gateway.clients.http import Reply
from gateway.nul import REPLACEMENT, TooDeep, mend_decoded


def test_every_key_and_string_at_any_depth_is_mended_in_place() -> None:
    """Keys, values and list items, nested, get U+FFFD; other values are untouched."""
    value = {"a\x00": ["x\x00", {"k": "v\x00", "n": 1, "t": True}], "ok": "fine"}
    assert mend_decoded(value) is value
    assert value == {
        f"a{REPLACEMENT}": [f"x{REPLACEMENT}", {"k": f"v{REPLACEMENT}", "n": 1, "t": True}],
        "ok": "fine",
    }


def test_containers_deeper_than_the_bound_are_refused_without_recursion() -> None:
    """Ten thousand levels are walked without a RecursionError and refused past the bound."""
    deep: list[object] = []
    cursor = deep
    for _ in range(10_000):
        cursor.append([])
        cursor = cursor[0]  # type: ignore[assignment]
    with pytest.raises(TooDeep):
        mend_decoded(deep, max_depth=32)
    assert mend_decoded([[["\x00"]]], max_depth=3) == [[[REPLACEMENT]]]


def test_a_providers_answer_never_yields_a_nul() -> None:
    """What a provider answers is decoded with each NUL replaced, ready to store."""
    body = orjson.dumps({"displayName": "A\x00da", "value": [{"id": "x\x00"}]})
    reply = Reply(status=200, reason="OK", headers={}, body=body)
    assert reply.json() == {
        "displayName": f"A{REPLACEMENT}da",
        "value": [{"id": f"x{REPLACEMENT}"}],
    }
