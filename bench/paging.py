"""Paging and lookups at a large size against a small one: SQLite, users seeded by SQL.

Usage: python bench/paging.py [--users N] [--small-users N] [--repeat R]

For each size, a gateway (SQLite, one worker) gets one user through the API; its rows
(``scim_users``, ``scim_user_values``, ``scim_claims``) are then copied by SQL, N - 1 times,
with the user's number put in every value that names it (id, userName, externalId, email),
so that every row is the kind the gateway writes, unique where it must be, and the counts
come from the database's own triggers. One copy is read back through the API and compared
with the template. Then, one request at a time (the median of ``--repeat``): the first
page, a page in the middle reached by paging forward, a page at the end asked for out of
the blue, and a ``userName eq`` lookup. Prints each time and its ratio, large / small.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from servers import prepare_gateway, serve_gateway
from steps import log

PAGE = 100
TEMPLATE = 1

# Every column, with the template's number replaced by the copy's in the ones that name it.
_COPY_USERS = """
WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i <= :last - 1)
INSERT INTO scim_users (id, account_id, user_name, user_name_key, external_id, display_name,
  given_name, family_name, active, extension, login_id, document, version, created_at,
  updated_at)
SELECT printf('00000000-0000-4000-8000-%012d', i), account_id,
  replace(user_name, 'user1@', 'user' || i || '@'),
  replace(user_name_key, 'user1@', 'user' || i || '@'),
  replace(external_id, 'ext-1', 'ext-' || i), display_name, given_name, family_name,
  active, extension, login_id,
  replace(replace(replace(document, 'user1@', 'user' || i || '@'), '"ext-1"',
    '"ext-' || i || '"'), id, printf('00000000-0000-4000-8000-%012d', i)),
  version, created_at, updated_at
FROM scim_users, n WHERE scim_users.pk = :template
"""
_COPY_VALUES = """
INSERT INTO scim_user_values (user_pk, account_id, attribute, type, value, value_key, "primary")
SELECT u.pk, v.account_id, v.attribute, v.type,
  replace(v.value, 'user1@', substr(u.user_name, 1, instr(u.user_name, '@'))),
  replace(v.value_key, 'user1@', substr(u.user_name_key, 1, instr(u.user_name_key, '@'))),
  v."primary"
FROM scim_user_values v JOIN scim_users u ON u.pk != :template
WHERE v.user_pk = :template
"""
_COPY_CLAIMS = """
INSERT INTO scim_claims (account_id, kind, value_key, user_pk)
SELECT c.account_id, c.kind,
  replace(replace(c.value_key, 'user1@', substr(u.user_name_key, 1, instr(u.user_name_key, '@'))),
    'ext-1', u.external_id), u.pk
FROM scim_claims c JOIN scim_users u ON u.pk != :template
WHERE c.user_pk = :template
"""


def body(n: int) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": f"user{n}@bench.example",
        "externalId": f"ext-{n}",
        "active": True,
        "displayName": "Bench User",
        "emails": [{"value": f"user{n}@bench.example", "type": "work", "primary": True}],
        "name": {"givenName": "Bench", "familyName": "User"},
    }


def seed(database: Path, users: int) -> float:
    """Copy the template user ``users - 1`` times; returns the seconds it took."""
    started = time.monotonic()
    with sqlite3.connect(database) as conn:
        params = {"template": TEMPLATE, "last": users}
        conn.execute(_COPY_USERS, params)
        conn.execute(_COPY_VALUES, params)
        conn.execute(_COPY_CLAIMS, params)
    return time.monotonic() - started


def on_disk(database: Path, users: int) -> str:
    """The database's bytes per user, and its largest tables and indexes (SQLite's
    ``dbstat``); the copies have no events, which an API create also writes."""
    with sqlite3.connect(database) as conn:
        sizes = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 6"
        ).fetchall()
        (total,) = conn.execute("SELECT sum(pgsize) FROM dbstat").fetchone()
    parts = ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in sizes)
    return f"{total / users:,.0f} bytes a user ({parts})"


def timed(http: httpx2.Client, url: str, params: dict[str, Any], repeat: int) -> float:
    """Median ms of ``repeat`` GETs (each answered 200)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = http.get(url, params=params)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            sys.exit(f"GET {url} {params} answered {response.status_code}: {response.text}")
    return statistics.median(times)


def forward(http: httpx2.Client, url: str, users: int, pages: int) -> float:
    """Mean ms a page while paging forward ``pages`` full pages from the middle (back to
    the first page after the last, as a client starting over does)."""
    full_pages = max(1, users // PAGE)
    first = full_pages // 2
    http.get(url, params={"startIndex": first * PAGE + 1, "count": PAGE})  # where it begins
    started = time.perf_counter()
    for step in range(1, pages + 1):
        params = {"startIndex": (first + step) % full_pages * PAGE + 1, "count": PAGE}
        if http.get(url, params=params).status_code != 200:
            sys.exit(f"paging failed at {params}")
    return (time.perf_counter() - started) * 1000 / pages


def measure(users: int, repeat: int, workdir: Path) -> tuple[dict[str, float], str]:
    """Times of each request at ``users`` users, and what the database holds on disk."""
    setup = prepare_gateway(workdir / f"data-{users}")
    server = serve_gateway(setup, workers=1, log_path=workdir / f"gateway-{users}.log")
    try:
        with httpx2.Client(headers=server.headers, timeout=60) as http:
            made = http.post(server.users_url, json=body(TEMPLATE))
            if made.status_code != 201:
                sys.exit(f"the template user was not created: {made.text}")
            assert setup.sqlite_path is not None
            seconds = seed(setup.sqlite_path, users)
            log(f"  {users:,} users: {users - 1:,} copied by SQL in {seconds:.1f} s")
            disk = on_disk(setup.sqlite_path, users)
            log(f"  on disk: {disk}")
            check(http, server.users_url, made.json(), users)
            url = server.users_url
            last = max(1, users - PAGE + 1)
            return {
                "first page": timed(http, url, {"startIndex": 1, "count": PAGE}, repeat),
                "paging forward, a page": forward(http, url, users, repeat),
                "last page, asked alone": timed(
                    http, url, {"startIndex": last, "count": PAGE}, repeat
                ),
                "userName eq lookup": timed(
                    http, url, {"filter": f'userName eq "user{users // 2}@bench.example"'}, repeat
                ),
                "/readyz": timed(http, server.base_url + "/readyz", {}, repeat),
            }, disk
    finally:
        server.stop()


def check(http: httpx2.Client, url: str, template: dict[str, Any], users: int) -> None:
    """A copy reads back as the template with its own number, and the totals hold."""
    n = users // 2
    found = http.get(url, params={"filter": f'externalId eq "ext-{n}"'}).json()
    if found["totalResults"] != 1:
        sys.exit(f"copy {n} not found by externalId: {found}")
    copy = found["Resources"][0]
    expected = {**template, "id": copy["id"], "userName": f"user{n}@bench.example"}
    expected |= {"externalId": f"ext-{n}", "meta": copy["meta"]}
    expected["emails"] = [{**template["emails"][0], "value": f"user{n}@bench.example"}]
    if copy != expected:
        sys.exit(f"copy {n} differs from the template:\n{copy}\n{expected}")
    total = http.get(url, params={"count": 0}).json()["totalResults"]
    if total != users:
        sys.exit(f"totalResults {total}, expected {users}")


def section(small_users: int, users: int, repeat: int) -> str:
    """Measure at both sizes; the Markdown section for docs/benchmarks.md."""
    with tempfile.TemporaryDirectory(prefix="cloudlink-paging-") as tmp:
        results = {}
        for size in (small_users, users):
            log(f"gateway (SQLite, 1 worker) at {size:,} users, copied by SQL")
            results[size] = measure(size, repeat, Path(tmp))
    (small, _), (large, disk) = results[small_users], results[users]
    lines = [
        f"## Paging and lookups at {users:,} users",
        "",
        f"`python bench/paging.py --users {users} --small-users {small_users} --repeat "
        f"{repeat}`: users copied by SQL from one the API made (SQLite, one worker), one "
        f"request at a time, medians of {repeat}. Goal: each within 1.3x of its time at "
        f"{small_users:,} users.",
        "",
        f"| request | {small_users:,} users (ms) | {users:,} users (ms) | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for name in small:
        ratio = large[name] / small[name] if small[name] else 0.0
        verdict = "**met**" if ratio <= 1.3 else "**missed**"
        lines.append(
            f"| {name} | {small[name]:.2f} | {large[name]:.2f} | {ratio:.2f}x | {verdict} |"
        )
    lines += ["", f"On disk at {users:,} users (without events): {disk}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/paging.py", description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--small-users", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    print()
    print(section(args.small_users, args.users, args.repeat))


if __name__ == "__main__":
    main()
