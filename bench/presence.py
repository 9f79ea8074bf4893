"""Benchmark of Teams presence: notification ingest, Teams → feed latency, sync all.

    python bench/presence.py          # every measurement; rewrites its docs section
    python bench/presence.py --quick  # a short check of the harness (1,000 users)

What it measures, on a fresh embedded default (SQLite, synchronous FULL) served by
``--workers`` processes (2: one per core of the machine it was written on), against the
fake identity platform and Graph of ``tests/fakes`` in this process:

- Set-up: N users provisioned through the gateway's SCIM endpoint and present in the fake
  tenant, the account's Teams app, and N / 625 monitors signed in (authorization code with
  PKCE), each subscribed for its users with resource data.
- Latency: a Teams change made in the fake (which pushes a rich notification as Graph
  does) until the gateway shows it, 50 changes one after another.
- Ingest: notification POSTs as Graph sends them (10 items each, encrypted resource data,
  a validation token), prepared beforehand, under wrk (32 connections, 8 s): items per
  second and p99 of the answer. Goal: ≥ 3,000 items/s, p99 well under Graph's 3 s.
- Sync all: every monitor reads back all its users, until the gateway reports it done;
  compared with its own work: the lower bound the fake's limits allow for the reads (its
  presence budget, and the time it takes to answer the 650-id reads at best, all at once)
  plus the write alone of the same changes (``bench/sync_write.py``: the monitors' units
  storing the same reads into a copy of the database taken just before the sync, no
  Graph, no HTTP). Then the same sync again at once, every user now in step with Teams
  (nothing to store). ``--sync-rounds`` (3) such pairs, the later ones after 90% of the
  users moved in Teams with their notifications lost; the median round is reported.
- Ingest again with ``--also-workers`` processes (1) on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from machine import commit, machine_info  # noqa: E402
from procs import memory_kib, tree  # noqa: E402
from webhooks import ADMIN, gateway_env, serve, stop  # noqa: E402
from wrk_runner import LoadSettings, run_wrk, wrk_version  # noqa: E402

from tests.conftest import user_body  # noqa: E402
from tests.fakes.loopback import serve_app  # noqa: E402
from tests.fakes.microsoft import FakeMicrosoft  # noqa: E402
from tests.fakes.microsoft_graph import notification_item  # noqa: E402

TENANT = "6a1d3f0e-8a41-4d7e-9b55-2f1c0c1b7e01"
CLIENT = "3f2b6c1a-5d4e-4f60-8a7b-9c0d1e2f3a4b"
SECRET = "bench~client~secret~0123456789"
PER_MONITOR = 625
STATES = [
    ("Busy", "InACall"),
    ("Away", "Away"),
    ("Available", "Available"),
    ("DoNotDisturb", "Presenting"),
]
SECTION_START = "<!-- presence:start -->"
SECTION_END = "<!-- presence:end -->"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def set_up(url: str, fake: FakeMicrosoft, users: int) -> tuple[httpx2.Client, str, list[str]]:
    http = httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    account = http.post("/api/v1/accounts", json={"name": "Bench"}).json()["id"]
    base = f"/api/v1/accounts/{account}"
    http.post(base + "/integrations", json={"kind": "azure_ad_sync"})
    keys = http.post(base + "/integrations/azure_ad_sync/keys").json()
    path = "/scim/v2/" + keys["tenant_url"].rsplit("/scim/v2/", 1)[1] + "/Users"
    scim = {"Authorization": f"Bearer {keys['secret_token']}"}

    def create(n: int) -> str:
        body = user_body(f"b{n}")
        answer = http.post(path, json=body, headers=scim)
        answer.raise_for_status()
        email: str = body["emails"][0]["value"]
        return email

    with ThreadPoolExecutor(16) as pool:
        emails = list(pool.map(create, range(users)))
    for email in emails:
        fake.add_user(TENANT, email)
    answer = http.put(
        base + "/integrations/microsoft_teams/settings",
        json={"name": "Teams", "tenant_id": TENANT, "client_id": CLIENT, "client_secret": SECRET},
    )
    answer.raise_for_status()
    with httpx2.Client(timeout=30, follow_redirects=True) as browser:
        for n in range(math.ceil(users / PER_MONITOR)):
            upn = f"monitor{n}@contoso.example"
            fake.add_user(TENANT, upn)
            added = http.post(base + "/presence/monitors", json={"upn": upn}).json()
            browser.get(added["authorize_url"]).raise_for_status()
    monitors = math.ceil(users / PER_MONITOR)

    def settled() -> bool:
        # Every user assigned, and every monitor's subscription made for its users (monitors
        # whose users moved while others were added replace theirs).
        listing = http.get(base + "/presence/monitors").json()
        live = fake.graph.subscriptions()
        covered = sum(str(s["resource"]).count("'") // 2 for s in live)
        return (
            listing["users_watched"] == users
            and all(m["status"] == "subscribed" for m in listing["items"])
            and len(live) == monitors
            and covered == users
        )

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if settled():
            return http, base, emails
        time.sleep(0.5)
    raise RuntimeError("not every user got watched within 10 minutes")


def latency(
    http: httpx2.Client, base: str, fake: FakeMicrosoft, emails: list[str], count: int
) -> dict[str, Any]:
    """A Teams change in the fake until the gateway shows it, one after another."""
    found: list[float] = []
    for index in range(count):
        email = random.choice(emails)
        availability, activity = STATES[index % len(STATES)]
        user_id = fake.user(email)["id"]
        if fake.presence(user_id)["availability"] == availability:
            availability, activity = STATES[(index + 1) % len(STATES)]
        started = time.monotonic()
        fake.set_teams_presence(user_id, availability, activity)
        while True:
            teams = http.get(f"{base}/presence/{email}").json()["sources"].get("teams") or {}
            if teams.get("availability") == availability:
                break
            if time.monotonic() - started > 30:
                raise RuntimeError("a Teams change did not arrive within 30 s")
            time.sleep(0.005)
        found.append(time.monotonic() - started)
    return {
        "changes": count,
        "p50_ms": round(percentile(found, 0.5) * 1000, 1),
        "p99_ms": round(percentile(found, 0.99) * 1000, 1),
        "max_ms": round(max(found) * 1000, 1),
    }


def prepare(fake: FakeMicrosoft, count: int, per_post: int, path: Path) -> int:
    """``count`` notification POSTs of ``per_post`` rich items each, as Graph sends them."""
    graph = fake.graph
    subscriptions = list(graph._subscriptions.values())
    items_total = 0
    with path.open("w") as out:
        for _ in range(count):
            items = []
            for _ in range(per_post):
                subscription = random.choice(subscriptions)
                user_id = random.choice(sorted(subscription.user_ids))
                items.append(notification_item(subscription, user_id, random.choice(STATES)))
            body = {
                "value": items,
                "validationTokens": [graph.engine.validation_token(TENANT, CLIENT)],
            }
            out.write(f"/webhooks/graph/notifications\t{orjson.dumps(body).decode()}\n")
            items_total += per_post
    return items_total


def ingest(
    url: str, fake: FakeMicrosoft, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    requests = workdir / "notifications.txt"
    prepare(fake, args.posts, args.items, requests)
    settings = LoadSettings(threads=2, connections=32, duration_s=args.duration, warmup_s=0)
    run_wrk(url, "graph.lua", [str(requests), "2"], 2, settings)
    result, _ = run_wrk(url, "graph.lua", [str(requests), "2"], args.duration, settings)
    acked = result.requests - result.unexpected_status
    return {
        "posts_per_s": round(acked / result.duration_s),
        "items_per_s": round(acked * args.items / result.duration_s),
        "items_per_post": args.items,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "non_202": result.unexpected_status + sum(result.socket_errors.values()),
        "command": result.command,
    }


async def _lower_bound(fake_url: str, fake: FakeMicrosoft, ids: list[list[str]]) -> float:
    """The fastest the fake serves the reads a sync needs: all at once, one app token."""
    token = fake.mint_app_token(TENANT, CLIENT)
    async with httpx2.AsyncClient(timeout=60) as client:
        started = time.monotonic()
        await asyncio.gather(
            *(
                client.post(
                    fake_url + "/v1.0/communications/getPresencesByUserId",
                    json={"ids": chunk},
                    headers={"Authorization": f"Bearer {token}"},
                )
                for chunk in ids
            )
        )
        return time.monotonic() - started


def _synced(http: httpx2.Client, base: str) -> float:
    """Seconds from asking for sync all until the gateway reports it done."""
    started = time.monotonic()
    http.post(base + "/presence/sync").raise_for_status()
    while not http.get(base + "/presence/sync").json()["done"]:
        time.sleep(0.01)
    return time.monotonic() - started


def _write_alone(
    workdir: Path, env: dict[str, str], account_id: str, reads: list[list[dict[str, Any]]]
) -> dict[str, Any]:
    """The sync's write alone (bench/sync_write.py) on the copy taken before the sync."""
    path = workdir / "sync-reads.json"
    path.write_text(json.dumps(reads))
    result = subprocess.run(
        [sys.executable, str(HERE / "sync_write.py"), account_id, str(path)],
        env={**env, "GATEWAY_DATA_DIR": str(workdir / "copy")},
        capture_output=True,
        text=True,
        check=True,
    )
    written: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return written


def _copy_database(data_dir: Path, workdir: Path) -> None:
    """A consistent copy of the gateway's SQLite file, taken while it serves."""
    (workdir / "copy").mkdir(exist_ok=True)
    source = sqlite3.connect(data_dir / "gateway.db")
    target = sqlite3.connect(workdir / "copy" / "gateway.db")
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _drift(fake: FakeMicrosoft, ids: list[list[str]], share: float) -> None:
    """Move ``share`` of the users to another state in Teams, their notifications lost:
    only a sync finds them (what the first round inherits from the ingest's states)."""
    for chunk in ids:
        for user_id in chunk:
            if random.random() < share:
                now = fake.presence(user_id)["availability"]
                availability, activity = random.choice([s for s in STATES if s[0] != now])
                fake.set_teams_presence(user_id, availability, activity, notify=False)


def _sync_round(
    http: httpx2.Client,
    base: str,
    fake: FakeMicrosoft,
    fake_url: str,
    ids: list[list[str]],
    *,
    workdir: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    """One sync all with changes and one in step, each against its own work."""
    # What the sync will read, as Graph answers it, and the database it will write to.
    reads = [[fake.presence(user_id) for user_id in chunk] for chunk in ids]
    _copy_database(Path(env["GATEWAY_DATA_DIR"]), workdir)
    took = _synced(http, base)
    # Again at once: every user now matches Teams, so nothing is stored; what is left is
    # the reads and the gateway's own work around them.
    in_step = _synced(http, base)
    served = asyncio.run(_lower_bound(fake_url, fake, ids))
    calls = len(ids)
    # The fake's budget: 1,500 presence requests per 30 s per app and tenant.
    budget_bound = max(0.0, (calls - 1500) / 1500 * 30)
    bound = max(served, budget_bound)
    account_id = base.rsplit("/", 1)[1]
    written = _write_alone(workdir, env, account_id, reads)
    # The same reads again on the copy, now in step: loading and comparing alone.
    compared = _write_alone(workdir, env, account_id, reads)
    whole = bound + written["seconds"]
    in_step_whole = bound + compared["seconds"]
    return {
        "reads": calls,
        "seconds": round(took, 2),
        "lower_bound_s": round(bound, 2),
        "write_alone_s": round(written["seconds"], 2),
        "events": written["events"],
        "bound_s": round(whole, 2),
        "ratio": round(took / whole, 2) if whole else 0.0,
        "in_step_seconds": round(in_step, 2),
        "compare_alone_s": round(compared["seconds"], 2),
        "in_step_bound_s": round(in_step_whole, 2),
        "in_step_ratio": round(in_step / in_step_whole, 2) if in_step_whole else 0.0,
    }


def _median_round(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The round whose ``key`` is the median (the lower middle one of an even count)."""
    ordered = sorted(rounds, key=lambda r: float(r[key]))
    return ordered[(len(ordered) - 1) // 2]


def sync_all(
    http: httpx2.Client,
    base: str,
    fake: FakeMicrosoft,
    fake_url: str,
    users: int,
    *,
    rounds: int,
    workdir: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    """``rounds`` syncs, the first after the ingest's states, the others after a drift of
    as many users; the median round by each ratio is reported, since one sync is short
    enough for this machine's noise to swing it."""
    ids = [sorted(s.user_ids) for s in fake.graph._subscriptions.values()]
    done: list[dict[str, Any]] = []
    for index in range(rounds):
        if index:
            _drift(fake, ids, share=0.9)
        done.append(_sync_round(http, base, fake, fake_url, ids, workdir=workdir, env=env))
        print(json.dumps({"sync_round": index + 1, **done[-1]}), flush=True)
    changed = _median_round(done, "ratio")
    in_step = _median_round(done, "in_step_ratio")
    return {
        "users": users,
        "rounds": rounds,
        "ratios": [r["ratio"] for r in done],
        "in_step_ratios": [r["in_step_ratio"] for r in done],
        **{k: v for k, v in changed.items() if not k.startswith(("in_step", "compare"))},
        **{k: v for k, v in in_step.items() if k.startswith(("in_step", "compare"))},
    }


def markdown(results: dict[str, Any]) -> str:
    m, lat, ing, sync = results["machine"], results["latency"], results["ingest"], results["sync"]
    other = results.get("ingest_other")
    plural = "es" if results["workers"] != 1 else ""
    rows = []
    if other:
        rows.append(
            f"| the same ingest with {other['workers']} process"
            f"{'es' if other['workers'] != 1 else ''} | {other['items_per_s']:,} items/s, p99 "
            f"{other['p99_ms']} ms, {other['non_202']} answers other than 202 | |"
        )
    return "\n".join(
        [
            SECTION_START,
            "## Teams presence",
            "",
            f"`python bench/presence.py`, {results['date']}, commit {results['commit']}, "
            f"{m.get('CPU', '')}, {m.get('nproc', '')} CPUs; wrk {results['wrk']}. "
            "The embedded default (SQLite, "
            f"synchronous FULL), {results['workers']} gateway process{plural} "
            f"(`serve --workers {results['workers']}`), {sync['users']:,} users over "
            f"{math.ceil(sync['users'] / PER_MONITOR)} monitors, against the fake identity "
            "platform and Graph (`tests/fakes/microsoft.py`) in the benchmark's process.",
            "",
            "| measure | result | goal |",
            "|---|---:|---|",
            f"| notification ingest ({ing['items_per_post']} rich items a POST, 32 connections) "
            f"| **{ing['items_per_s']:,} items/s** ({ing['posts_per_s']:,} POSTs/s), p99 "
            f"{ing['p99_ms']} ms, {ing['non_202']} answers other than 202 | ≥ 3,000/s, p99 well "
            "under 3 s |",
            *rows,
            f"| Teams change → gateway ({lat['changes']} changes) | p50 {lat['p50_ms']} ms, p99 "
            f"{lat['p99_ms']} ms, max {lat['max_ms']} ms | within 10 s |",
            f"| sync all, {sync['users']:,} users ({sync['reads']} reads of ≤ 650, "
            f"{sync['events']:,} changes stored), the median of {sync['rounds']} rounds "
            f"| **{sync['seconds']} s** against "
            f"{sync['bound_s']} s: the reads' bound {sync['lower_bound_s']} s + the write "
            f"alone {sync['write_alone_s']} s (**{sync['ratio']}x**; rounds "
            f"{_ratios(sync['ratios'])}) | within 1.2x |",
            f"| the same sync again at once (every user in step: nothing to store) | "
            f"**{sync['in_step_seconds']} s** against {sync['in_step_bound_s']} s: the reads' "
            f"bound + loading and comparing alone {sync['compare_alone_s']} s "
            f"(**{sync['in_step_ratio']}x**; rounds {_ratios(sync['in_step_ratios'])}) "
            "| within 1.5x |",
            f"| memory of the gateway after the run | "
            f"{(results['memory_kib']['vm_rss_kib'] or 0) // 1024} MiB RSS, peak "
            f"{(results['memory_kib']['vm_hwm_kib'] or 0) // 1024} MiB | |",
            "",
            "Ingest command (REQUESTS: the prepared POSTs, one per line): "
            f"`{_portable(ing['command'])}`",
            SECTION_END,
        ]
    )


def _ratios(values: list[float]) -> str:
    return " / ".join(f"{value}x" for value in values)


def _portable(command: str) -> str:
    """The command without this run's port and temporary directory."""
    command = re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", command)
    return re.sub(r"\S*/notifications\.txt", "REQUESTS", command)


def write_docs(section: str, path: Path) -> None:
    text = path.read_text()
    if SECTION_START in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1]
        path.write_text(head + section + tail)
    else:
        path.write_text(text.rstrip() + "\n\n" + section + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--posts", type=int, default=4000, help="prepared notification POSTs")
    parser.add_argument("--items", type=int, default=10, help="items per POST")
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument(
        "--workers", type=int, default=2, help="gateway processes (one per core here)"
    )
    parser.add_argument(
        "--also-workers",
        type=int,
        default=1,
        help="ingest again with this many processes on the same database (0: no)",
    )
    parser.add_argument(
        "--sync-rounds", type=int, default=3, help="syncs measured; the median is reported"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.users, args.duration, args.posts, args.changes, args.no_docs = 1000, 3, 800, 10, True
    with tempfile.TemporaryDirectory(prefix="bench-presence-") as temp, FakeMicrosoft() as fake:
        workdir = Path(temp)
        fake.add_tenant(TENANT)
        fake.add_app(TENANT, CLIENT, SECRET)
        with serve_app(fake.app) as fake_url:
            env = gateway_env(workdir / "data", None, fake_url)
            env.update({"GATEWAY_GRAPH_API_URL": fake_url, "GATEWAY_LOGIN_URL": fake_url})
            # Graph calls the gateway back: its public URL is the one it serves on.
            env.pop("GATEWAY_PUBLIC_URL", None)
            process, url = serve(env, args.workers, workdir / "gateway.log")
            try:
                http, base, emails = set_up(url, fake, args.users)
                print("set up", flush=True)
                lat = latency(http, base, fake, emails, args.changes)
                print(json.dumps(lat), flush=True)
                ing = ingest(url, fake, workdir, args)
                print(json.dumps(ing), flush=True)
                sync = sync_all(
                    http,
                    base,
                    fake,
                    fake_url,
                    args.users,
                    rounds=args.sync_rounds,
                    workdir=workdir,
                    env=env,
                )
                print(json.dumps(sync), flush=True)
                memory = memory_kib(tree(process.pid))
            finally:
                stop(process)
            other = None
            if args.also_workers:
                # The same database, served by another number of processes: ingest only.
                process, url = serve(env, args.also_workers, workdir / "gateway-other.log")
                try:
                    other = {"workers": args.also_workers, **ingest(url, fake, workdir, args)}
                    print(json.dumps(other), flush=True)
                finally:
                    stop(process)
    results = {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(wrk_version()),
        "wrk": wrk_version(),
        "latency": lat,
        "workers": args.workers,
        "ingest": ing,
        "ingest_other": other,
        "sync": sync,
        "memory_kib": memory,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    section = markdown(results)
    print(section)
    if not args.no_docs:
        write_docs(section, ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
