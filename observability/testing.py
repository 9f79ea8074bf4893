"""Helpers for tests: capture what the gateway logs."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog


@contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect every structlog event emitted inside the block, as dicts."""
    with structlog.testing.capture_logs() as captured:
        yield captured
