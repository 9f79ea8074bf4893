"""How soon a job written by one replica is taken by another, on one PostgreSQL.

    python bench/replicas.py            # prints the table for docs/benchmarks.md
    python bench/replicas.py --quick    # fewer replies

A replica's own commits wake its own outbox worker at once; another replica finds the
row at its next poll (``GATEWAY_OUTBOX_POLL_SECONDS``, 0.5 s). This measures both: replies
posted one at a time to replica A, and the time from A's answer (the row committed) to
the fake Twilio API receiving the send, when A delivers (its own wake) and when A does
not deliver (``GATEWAY_DELIVERY_ENABLED=false``) and replica B, polling, does. It is the
measurement behind decision 0019 (poll, no LISTEN/NOTIFY).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from machine import machine_info  # noqa: E402
from postgres import PostgresCluster  # noqa: E402
from webhooks import ADMIN, gateway_env, serve, set_up, start_fake, stop  # noqa: E402
from wrk_runner import wrk_version  # noqa: E402


def latencies(url: str, fake_url: str, replies: int) -> list[float]:
    """Seconds from each reply's accepted answer to the fake receiving its send."""
    [channel] = set_up(url, 1)
    conversation = channel.conversations[0]
    path = f"/api/v1/accounts/{channel.account_id}/conversations/{conversation}/messages"
    found: list[float] = []
    with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        for n in range(replies):
            before = httpx2.get(fake_url + "/_stats").json()["sent"]
            http.post(path, json={"text": f"reply {n}"}).raise_for_status()
            accepted = time.time()
            while True:
                stats = httpx2.get(fake_url + f"/_stats?skip={before}").json()
                if stats["sent"] > before:
                    found.append(stats["first"] - accepted)
                    break
                time.sleep(0.005)
            time.sleep(0.05)
    return found


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{statistics.median(ordered) * 1000:.0f} ms | {p99 * 1000:.0f} ms | "
        f"{ordered[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    replies = 20 if args.quick else 100
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as temp:
        workdir = Path(temp)
        fake, fake_url = start_fake(workdir)
        cluster = PostgresCluster()
        try:
            cluster.start()
            for name, a_delivers in (
                ("A delivers (its own wake)", True),
                ("B delivers (its poll)", False),
            ):
                db = f"replicas_{int(a_delivers)}"
                url = cluster.create_database(db).replace("postgresql://", "postgresql+psycopg://")
                env_a = gateway_env(
                    workdir / f"{db}-a",
                    url,
                    fake_url,
                    GATEWAY_DELIVERY_ENABLED="true" if a_delivers else "false",
                )
                env_b = gateway_env(workdir / f"{db}-b", url, fake_url)
                a, a_url = serve(env_a, 1, workdir / "a.log")
                b, _ = serve(env_b, 1, workdir / "b.log")
                try:
                    rows.append((name, summary(latencies(a_url, fake_url, replies))))
                finally:
                    stop(a)
                    stop(b)
        finally:
            stop(fake)
            cluster.close()
    info = machine_info(wrk_version())
    print(
        f"Machine: {info}. {replies} replies, one at a time, 2 replicas, "
        "GATEWAY_OUTBOX_POLL_SECONDS=0.5 (default).\n"
    )
    print("| who delivers | p50 | p99 | max |")
    print("|---|---|---|---|")
    for name, shown in rows:
        print(f"| {name} | {shown} |")


if __name__ == "__main__":
    main()
