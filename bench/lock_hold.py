"""The lock-hold experiment: another process holds SQLite's write lock while the gateway serves.

With the gateway on SQLite, this process opens the database file and holds its write lock
(``BEGIN IMMEDIATE``) for ``hold_s`` seconds, as the CLI, a backup or a stuck process might.
Before, during and after the hold, three other processes load the gateway:

- probes: sequential ``GET /livez`` and ``GET /metrics``, one after the other, each of which
  should answer 200 within 50 ms, lock or not (they never touch the database);
- reads: ``userName eq`` filter lookups of seeded users, which SQLite's WAL mode keeps
  serving while another connection holds the write lock;
- writes: SCIM creates of new users, which wait for the lock for at most
  ``GATEWAY_DATABASE_LOCK_TIMEOUT`` and are then answered 503 with ``Retry-After``, with
  nothing written.

Afterwards the users are counted: the count must have grown by exactly the number of
creates answered 201, and no user whose create was answered 503 may exist.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import random
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx2
from http_client import Connection
from seeding import SCIM_JSON, user_name
from servers import Server

Log = Callable[[str], None]


@dataclass(frozen=True)
class LockSettings:
    """The experiment's shape."""

    hold_s: float = 10.0
    lock_timeout_s: float = 2.0  # GATEWAY_DATABASE_LOCK_TIMEOUT of the gateway under test
    before_s: float = 2.0  # load before the hold starts
    after_s: float = 4.0  # load after the release
    readers: int = 2  # concurrent lookup loops
    writers: int = 4  # concurrent create loops
    answer_limit_ms: float = 50.0  # /livez and /metrics must answer within this
    late_s: float = 1.0  # a refused write may answer this long after its lock timeout


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent and answered (``time.monotonic``), and the answer."""

    kind: str  # livez, metrics, read, write
    sent: float
    answered: float
    status: int  # 0: no answer (connection error or timeout)
    ok: bool  # reads: found exactly one user; writes: 201, or 503 with Retry-After
    retry_after: str | None = None
    name: str = ""  # the userName a write tried to create

    @property
    def ms(self) -> float:
        return 1000 * (self.answered - self.sent)


# -- The load, each kind in a process of its own --------------------------------------------
#
# Separate processes, so that one kind's work never delays another's timing (a thread
# would wait for the GIL). time.monotonic() is one clock for every process on Linux.


def _load_process() -> None:
    """In a load process: Ctrl-C is for the harness, which ends the process with SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


def probe_loop(base_url: str, start_at: float, end_at: float) -> list[Sample]:
    """``GET /livez`` and ``GET /metrics`` in turn, one at a time, until ``end_at``."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    samples: list[Sample] = []
    _sleep_until(start_at)
    paths = ("/livez", "/metrics")
    i = 0
    while time.monotonic() < end_at:
        path = paths[i % 2]
        i += 1
        sent = time.monotonic()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        answered = time.monotonic()
        samples.append(Sample(path[1:], sent, answered, status, status == 200))
    conn.close()
    return samples


async def _read_loops(
    users_url: str, headers: dict[str, str], users: int, concurrency: int, end_at: float
) -> list[Sample]:
    path = urlsplit(users_url).path
    samples: list[Sample] = []

    async def loop() -> None:
        connection = Connection(users_url, headers, timeout_s=30)
        try:
            while time.monotonic() < end_at:
                name = user_name(random.randint(1, users))
                query = quote(f'userName eq "{name}"')
                sent = time.monotonic()
                try:
                    response = await connection.request("GET", f"{path}?filter={query}")
                except (OSError, TimeoutError, RuntimeError):
                    await connection.close()
                    samples.append(Sample("read", sent, time.monotonic(), 0, False))
                    continue
                found = response.status == 200 and json.loads(response.body)["totalResults"] == 1
                samples.append(Sample("read", sent, time.monotonic(), response.status, found))
        finally:
            await connection.close()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return samples


def read_loop(
    users_url: str,
    headers: dict[str, str],
    users: int,
    concurrency: int,
    start_at: float,
    end_at: float,
) -> list[Sample]:
    """``concurrency`` loops of filter lookups of random seeded users until ``end_at``."""
    _sleep_until(start_at)
    return asyncio.run(_read_loops(users_url, headers, users, concurrency, end_at))


def _write_body(name: str, phone: str) -> bytes:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "externalId": name,
        "displayName": name,
        "emails": [{"type": "work", "value": name, "primary": True}],
        "phoneNumbers": [{"type": "work", "value": phone}],
        "active": True,
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def _write_loops(
    users_url: str, headers: dict[str, str], tag: str, concurrency: int, end_at: float
) -> list[Sample]:
    path = urlsplit(users_url).path
    samples: list[Sample] = []

    async def loop(writer: int) -> None:
        connection = Connection(users_url, headers, timeout_s=60)
        counter = 0
        try:
            while time.monotonic() < end_at:
                counter += 1
                name = f"lock-{tag}-{writer}-{counter}@bench.example"
                # Apart from the seeded and wrk's numbers (see seeding.phone_number).
                phone = f"+19{writer:02d}{counter:07d}"
                sent = time.monotonic()
                try:
                    response = await connection.request("POST", path, _write_body(name, phone))
                except (OSError, TimeoutError, RuntimeError):
                    await connection.close()
                    samples.append(Sample("write", sent, time.monotonic(), 0, False, name=name))
                    continue
                retry_after = response.headers.get("retry-after")
                ok = response.status == 201 or (response.status == 503 and bool(retry_after))
                samples.append(
                    Sample("write", sent, time.monotonic(), response.status, ok, retry_after, name)
                )
        finally:
            await connection.close()

    await asyncio.gather(*(loop(w) for w in range(1, concurrency + 1)))
    return samples


def write_loop(
    users_url: str,
    headers: dict[str, str],
    tag: str,
    concurrency: int,
    start_at: float,
    end_at: float,
) -> list[Sample]:
    """``concurrency`` loops of creates of new users until ``end_at``."""
    _sleep_until(start_at)
    return asyncio.run(_write_loops(users_url, headers, tag, concurrency, end_at))


# -- The hold and the checks -----------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """When this process held the write lock (``time.monotonic``)."""

    started: float  # BEGIN IMMEDIATE returned: the lock is ours
    releasing: float  # just before ROLLBACK
    released: float  # ROLLBACK returned


def hold_write_lock(path: Path, seconds: float) -> Hold:
    """Hold SQLite's write lock on ``path`` for ``seconds``, as another process would."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        time.sleep(seconds)
        releasing = time.monotonic()
        conn.execute("ROLLBACK")
        return Hold(started, releasing, time.monotonic())
    finally:
        conn.close()


def _scim_total(client: httpx2.Client, server: Server, filter_text: str | None = None) -> int:
    params = {"count": "0", **({"filter": filter_text} if filter_text else {})}
    response = client.get(server.users_url, params=params, headers=server.headers)
    response.raise_for_status()
    return int(response.json()["totalResults"])


@dataclass
class LockResult:
    """What one run of the experiment saw."""

    label: str
    workers: int
    settings: LockSettings
    command: str
    users_before: int = 0
    users_after: int = 0
    hold: Hold | None = None
    samples: list[Sample] = field(default_factory=list)
    refused_stored: int = 0  # users found stored although their create was answered 503
    log_errors: list[str] = field(default_factory=list)
    error: str | None = None


def run_lock_hold(
    server: Server,
    sqlite_path: Path,
    users: int,
    settings: LockSettings,
    result: LockResult,
    log: Log,
) -> LockResult:
    """Load ``server`` before, during and after a hold of its database's write lock."""
    headers = {"Accept": SCIM_JSON, "Content-Type": SCIM_JSON, **server.headers}
    with httpx2.Client(timeout=30) as client:
        result.users_before = _scim_total(client, server)
        start_at = time.monotonic() + 1.5  # time for the load processes to start
        hold_at = start_at + settings.before_s
        end_at = hold_at + settings.hold_s + settings.after_s
        tag = uuid.uuid4().hex[:8]
        # Pool's exit terminates the load processes: at once if anything went wrong.
        with multiprocessing.Pool(3, initializer=_load_process) as pool:
            loads = [
                pool.apply_async(probe_loop, (server.base_url, start_at, end_at)),
                pool.apply_async(
                    read_loop,
                    (server.users_url, headers, users, settings.readers, start_at, end_at),
                ),
                pool.apply_async(
                    write_loop,
                    (server.users_url, headers, tag, settings.writers, start_at, end_at),
                ),
            ]
            _sleep_until(hold_at)
            log(f"  holding the write lock for {settings.hold_s:.0f} s")
            result.hold = hold_write_lock(sqlite_path, settings.hold_s)
            for load in loads:
                result.samples += load.get(timeout=max(1.0, end_at - time.monotonic() + 90))
        result.users_after = _scim_total(client, server)
        refused = [s.name for s in result.samples if s.kind == "write" and s.status == 503]
        result.refused_stored = sum(
            _scim_total(client, server, f'userName eq "{name}"') for name in refused
        )
    return result
