"""The benchmark's users, and seeding a server with them over SCIM POSTs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from http_client import Connection

DOMAIN = "bench.example"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_JSON = "application/scim+json"


def user_name(i: int) -> str:
    """The userName (and work email) of the seeded user number ``i``."""
    return f"user{i}@{DOMAIN}"


def phone_number(i: int) -> str:
    """The phone number of the seeded user number ``i`` (below 10**9).

    Every benchmark number is a North American one, +1 and 10 digits: E.164 and of a
    possible length for its country code, as the gateway requires. The first digit
    tells who made it: 6 seeding, 7 and 8 wrk's creates (warm-up, measured), 9 the
    lock-hold experiment, 5 the profile.
    """
    return f"+16{i:09d}"


def user_body(i: int) -> dict[str, Any]:
    """The SCIM body of the seeded user number ``i``, the same for every server."""
    name = user_name(i)
    return {
        "schemas": [USER_SCHEMA],
        "userName": name,
        "externalId": f"ext-{i}",
        "displayName": f"Bench User {i}",
        "name": {"givenName": "Bench", "familyName": f"User {i}"},
        "emails": [{"type": "work", "value": name, "primary": True}],
        "phoneNumbers": [{"type": "work", "value": phone_number(i)}],
        "active": True,
    }


class SeedError(RuntimeError):
    """A server refused a seeded user, or seeding ran out of time."""


@dataclass(frozen=True)
class SeedResult:
    """How many users were created, and how long it took."""

    created: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.created / self.seconds if self.seconds > 0 else 0.0


async def _seed(
    users_url: str,
    headers: dict[str, str],
    numbers: range,
    concurrency: int,
) -> int:
    path = urlsplit(users_url).path
    todo: Iterator[int] = iter(numbers)
    created = 0

    async def worker() -> None:
        nonlocal created
        connection = Connection(users_url, headers)
        try:
            for i in todo:
                body = json.dumps(user_body(i), separators=(",", ":")).encode()
                response = await connection.request("POST", path, body)
                if response.status != 201:
                    text = response.body[:500].decode(errors="replace")
                    raise SeedError(
                        f"POST {users_url} for {user_name(i)} answered {response.status}: {text}"
                    )
                created += 1
        finally:
            await connection.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return created


def seed(
    users_url: str,
    headers: Mapping[str, str],
    numbers: range,
    *,
    concurrency: int = 32,
    deadline_s: float = 3600.0,
) -> SeedResult:
    """POST the users numbered ``numbers`` to ``users_url``, ``concurrency`` at a time.

    Every POST must answer 201; the first that does not raises :class:`SeedError`.
    """
    request_headers = {"Content-Type": SCIM_JSON, "Accept": SCIM_JSON, **headers}
    started = time.perf_counter()
    try:
        created = asyncio.run(
            asyncio.wait_for(
                _seed(users_url, request_headers, numbers, concurrency), timeout=deadline_s
            )
        )
    except TimeoutError as exc:
        raise SeedError(f"seeding {len(numbers)} users took more than {deadline_s:.0f} s") from exc
    except ExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        if isinstance(first, SeedError):
            raise first from None
        raise SeedError(f"seeding failed: {type(first).__name__}: {first}") from first
    return SeedResult(created=created, seconds=time.perf_counter() - started)
