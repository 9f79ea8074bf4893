"""Calling the gateway's async service functions from plain (synchronous) tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion on a fresh event loop, as the CLI does."""
    return asyncio.run(coroutine)
