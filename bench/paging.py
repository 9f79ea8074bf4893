"""Paging and lookups at a large size against a small one, users seeded by SQL, on SQLite
and on PostgreSQL.

Usage: python bench/paging.py [--users N] [--small-users N] [--repeat R]
       [--databases sqlite,postgresql]

For each database and size, a gateway (one worker) gets one user through the API; its rows
(``scim_users``, ``scim_user_values``, ``scim_claims``) are then copied by SQL, N - 1 times,
with the user's number put in every value that names it (id, userName, externalId, email),
so that every row is the kind the gateway writes, unique where it must be, and the counts
come from the database's own triggers. One copy is read back through the API and compared
with the template. Then, one request at a time (the median of ``--repeat``): the first
page, a page in the middle reached by paging forward, a page at the end asked for out of
the blue, and a ``userName eq`` lookup. Prints each time and its ratio, large / small.
On PostgreSQL (a throwaway cluster, as ``run.py`` makes; root and Debian's
``postgresql-common``) the copies are analyzed before the requests, as autovacuum would, and
the counter tables rewritten as one create a transaction leaves them (see ``seed``).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import psycopg
from configs import Postgres
from servers import GatewaySetup, prepare_gateway, serve_gateway
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


# The same copies in PostgreSQL's SQL (the document is jsonb: replaced as text).
_PG_COPY_USERS = """
INSERT INTO scim_users (id, account_id, user_name, user_name_key, external_id, display_name,
  given_name, family_name, active, extension, login_id, document, version, created_at,
  updated_at)
SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'), account_id,
  replace(user_name, 'user1@', 'user' || i || '@'),
  replace(user_name_key, 'user1@', 'user' || i || '@'),
  replace(external_id, 'ext-1', 'ext-' || i), display_name, given_name, family_name,
  active, extension, login_id,
  replace(replace(replace(document::text, 'user1@', 'user' || i || '@'), '"ext-1"',
    '"ext-' || i || '"'), id, '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::jsonb,
  version, created_at, updated_at
FROM scim_users, generate_series(%(first)s::bigint, %(last)s::bigint) AS i
WHERE scim_users.pk = %(template)s
"""
_PG_COPY_VALUES = """
INSERT INTO scim_user_values (user_pk, account_id, attribute, type, value, value_key, "primary")
SELECT u.pk, v.account_id, v.attribute, v.type,
  replace(v.value, 'user1@', substr(u.user_name, 1, strpos(u.user_name, '@'))),
  replace(v.value_key, 'user1@', substr(u.user_name_key, 1, strpos(u.user_name_key, '@'))),
  v."primary"
FROM scim_user_values v JOIN scim_users u ON u.pk > %(after)s
WHERE v.user_pk = %(template)s
"""
_PG_COPY_CLAIMS = """
INSERT INTO scim_claims (account_id, kind, value_key, user_pk)
SELECT c.account_id, c.kind,
  replace(replace(c.value_key, 'user1@', substr(u.user_name_key, 1, strpos(u.user_name_key,
    '@'))), 'ext-1', u.external_id), u.pk
FROM scim_claims c JOIN scim_users u ON u.pk > %(after)s
WHERE c.user_pk = %(template)s
"""
# Users copied per transaction on PostgreSQL. The triggers update an account's 16 count
# rows once per user, and each update leaves a row version that the next one steps over
# until the transaction ends: a million in one transaction took over 20 minutes.
_PG_BATCH = 20_000


class Store:
    """Where a measured gateway keeps its data, and how users are copied there."""

    name = "SQLite"

    def prepare(self, data_dir: Path) -> GatewaySetup:
        return prepare_gateway(data_dir)

    def seed(self, setup: GatewaySetup, users: int) -> float:
        """Copy the template user ``users - 1`` times; returns the seconds it took."""
        assert setup.sqlite_path is not None
        started = time.monotonic()
        with sqlite3.connect(setup.sqlite_path) as conn:
            params = {"template": TEMPLATE, "last": users}
            conn.execute(_COPY_USERS, params)
            conn.execute(_COPY_VALUES, params)
            conn.execute(_COPY_CLAIMS, params)
        return time.monotonic() - started

    def on_disk(self, setup: GatewaySetup, users: int) -> str:
        """The database's bytes per user, and its largest tables and indexes (SQLite's
        ``dbstat``); the copies have no events, which an API create also writes."""
        assert setup.sqlite_path is not None
        with sqlite3.connect(setup.sqlite_path) as conn:
            sizes = conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 6"
            ).fetchall()
            (total,) = conn.execute("SELECT sum(pgsize) FROM dbstat").fetchone()
        return _disk(total, users, sizes)

    def close(self) -> None:
        pass


class PostgresStore(Store):
    """A database per size on a throwaway cluster of our own."""

    name = "PostgreSQL"

    def __init__(self) -> None:
        self.postgres = Postgres(None)
        self.urls: dict[int, str] = {}

    def prepare(self, data_dir: Path) -> GatewaySetup:
        cluster = self.postgres.get()
        name = "paging_" + data_dir.name.replace("-", "_")
        url = cluster.create_database(name)
        setup = prepare_gateway(data_dir, database_url=url, shown_url=cluster.redacted_url(name))
        self.urls[id(setup)] = url
        return setup

    def _connect(self, setup: GatewaySetup) -> psycopg.Connection[Any]:
        return psycopg.connect(self.urls[id(setup)], autocommit=True)

    def seed(self, setup: GatewaySetup, users: int) -> float:
        started = time.monotonic()
        with self._connect(setup) as conn:
            template = _pg_template(conn)
            for first in range(2, users + 1, _PG_BATCH):
                last = min(users, first + _PG_BATCH - 1)
                with conn.transaction():
                    row = conn.execute("SELECT max(pk) FROM scim_users").fetchone()
                    assert row is not None
                    params = {"template": template, "first": first, "last": last}
                    params["after"] = int(row[0])
                    conn.execute(_PG_COPY_USERS, params)
                    conn.execute(_PG_COPY_VALUES, params)
                    conn.execute(_PG_COPY_CLAIMS, params)
            # The copies add 20,000 users a transaction, and PostgreSQL keeps every
            # version of a block's counter row that one transaction writes: the 1,968
            # counter rows of a million users took 7,656 pages, and a page asked alone,
            # which sums them, read all of them (20 ms). Users the API makes are one a
            # transaction, and their counters' updates stay on their pages (20,000 such
            # updates left the table at 23 pages). Rewritten as the API would leave them.
            conn.execute("VACUUM FULL scim_user_blocks, scim_user_counts")
            conn.execute("VACUUM ANALYZE")
        return time.monotonic() - started

    def on_disk(self, setup: GatewaySetup, users: int) -> str:
        """The database's bytes per user, and its largest tables and indexes."""
        with self._connect(setup) as conn:
            sizes = conn.execute(
                "SELECT relname, pg_relation_size(oid) FROM pg_class"
                " WHERE relkind IN ('r', 'i') AND relnamespace = 'public'::regnamespace"
                " ORDER BY 2 DESC LIMIT 6"
            ).fetchall()
            (total,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return _disk(total, users, sizes)

    def close(self) -> None:
        self.postgres.close()


def _pg_template(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT min(pk) FROM scim_users").fetchone()
    assert row is not None
    return int(row[0])


def _disk(total: int, users: int, sizes: list[Any]) -> str:
    parts = ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in sizes)
    return f"{total / users:,.0f} bytes a user ({parts})"


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


def measure(store: Store, users: int, repeat: int, workdir: Path) -> tuple[dict[str, float], str]:
    """Times of each request at ``users`` users, and what the database holds on disk."""
    key = f"{store.name.lower()}-{users}"
    setup = store.prepare(workdir / f"data-{key}")
    server = serve_gateway(setup, workers=1, log_path=workdir / f"gateway-{key}.log")
    try:
        with httpx2.Client(headers=server.headers, timeout=60) as http:
            made = http.post(server.users_url, json=body(TEMPLATE))
            if made.status_code != 201:
                sys.exit(f"the template user was not created: {made.text}")
            seconds = store.seed(setup, users)
            log(f"  {users:,} users: {users - 1:,} copied by SQL in {seconds:.1f} s")
            disk = store.on_disk(setup, users)
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


STORES: dict[str, Callable[[], Store]] = {"sqlite": Store, "postgresql": PostgresStore}


def section(
    small_users: int, users: int, repeat: int, databases: tuple[str, ...] = ("sqlite",)
) -> str:
    """Measure at both sizes on each database; the Markdown section for docs/benchmarks.md."""
    names = ",".join(databases)
    lines = [
        f"## Paging and lookups at {users:,} users",
        "",
        f"`python bench/paging.py --users {users} --small-users {small_users} --repeat "
        f"{repeat} --databases {names}`: users copied by SQL from one the API made (one "
        f"worker), one request at a time, medians of {repeat}. Goal: each within 1.3x of "
        f"its time at {small_users:,} users.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="cloudlink-paging-") as tmp:
        for database in databases:
            store = STORES[database]()
            try:
                results = {}
                for size in (small_users, users):
                    log(f"gateway ({store.name}, 1 worker) at {size:,} users, copied by SQL")
                    results[size] = measure(store, size, repeat, Path(tmp))
            finally:
                store.close()
            lines += _table(store.name, small_users, users, results)
    return "\n".join(lines)


def _table(
    name: str, small_users: int, users: int, results: dict[int, tuple[dict[str, float], str]]
) -> list[str]:
    (small, _), (large, disk) = results[small_users], results[users]
    lines = [
        f"| {name}: request | {small_users:,} users (ms) | {users:,} users (ms) | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for request in small:
        ratio = large[request] / small[request] if small[request] else 0.0
        verdict = "**met**" if ratio <= 1.3 else "**missed**"
        lines.append(
            f"| {request} | {small[request]:.2f} | {large[request]:.2f} | {ratio:.2f}x "
            f"| {verdict} |"
        )
    lines += ["", f"{name} on disk at {users:,} users (without events): {disk}.", ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/paging.py", description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--small-users", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    databases = tuple(d.strip() for d in args.databases.split(",") if d.strip())
    unknown = [d for d in databases if d not in STORES]
    if unknown:
        parser.error(f"unknown databases: {', '.join(unknown)} (sqlite, postgresql)")
    print()
    print(section(args.small_users, args.users, args.repeat, databases))


if __name__ == "__main__":
    main()
