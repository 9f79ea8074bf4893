"""Count the statements PostgreSQL runs for one request of each kind, with pg_stat_statements.

Usage: python bench/pg_statements.py --database-url URL [--count N]

URL names an empty database on a server that loads ``pg_stat_statements``
(``shared_preload_libraries``); the extension is created in it. The gateway (one worker)
and the fake provider are started here. For each kind of request (a SCIM create, a
``userName eq`` lookup, a signed Twilio webhook) it resets the statistics, sends ``N``
requests one at a time, and prints the statements by calls per request, with the mean
time PostgreSQL spent in each. The background worker is idle: no endpoint is configured,
so a webhook queues nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx2
import psycopg
from twilio.request_validator import RequestValidator
from webhooks import (
    ADMIN,
    PUBLIC,
    customer_of,
    gateway_env,
    params_for,
    serve,
    set_up,
    start_fake,
    stop,
)

# The gateway's own statements: not the statistics' reset, not this script's reads.
HIDDEN = ("pg_stat_statements", "pg_catalog", "SET lock_timeout", "show ", "select pg_")


def reset(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def statements(database_url: str, count: int) -> list[tuple[float, float, str]]:
    """(calls per request, mean ms, query) of the statements since the last reset."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT calls, mean_exec_time, query FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " ORDER BY calls DESC"
        ).fetchall()
    return [
        (calls / count, mean, " ".join(query.split())[:110])
        for calls, mean, query in rows
        if not any(hidden.lower() in query.lower() for hidden in HIDDEN)
    ]


def show(kind: str, found: list[tuple[float, float, str]]) -> None:
    total = sum(per for per, _mean, _query in found)
    print(f"\n{kind}: {total:.1f} statements a request")
    for per, mean, query in found:
        if per >= 0.05:
            print(f"  {per:5.2f}  {mean:6.3f} ms  {query}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    plain = args.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as temp:
        workdir = Path(temp)
        fake, fake_url = start_fake(workdir)
        url_for_gateway = plain.replace("postgresql://", "postgresql+psycopg://")
        env = gateway_env(workdir / "data", url_for_gateway, fake_url)
        server, url = serve(env, 1, workdir / "gateway.log")
        try:
            [channel] = set_up(url, 1)
            admin = {"Authorization": f"Bearer {ADMIN}"}
            with httpx2.Client(base_url=url, timeout=30) as http:
                base = f"/api/v1/accounts/{channel.account_id}"
                http.post(base + "/integrations", json={"kind": "azure_ad_sync"}, headers=admin)
                keys = http.post(base + "/integrations/azure_ad_sync/keys", headers=admin).json()
                users = keys["tenant_url"].removeprefix(PUBLIC) + "/Users"
                scim = {
                    "Authorization": f"Bearer {keys['secret_token']}",
                    "Content-Type": "application/scim+json",
                }

                def body(index: int) -> dict[str, object]:
                    return {
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": f"user{index}@stmt.example",
                        "externalId": str(uuid.uuid4()),
                        "active": True,
                        "displayName": f"User {index}",
                        "emails": [
                            {"value": f"user{index}@stmt.example", "type": "work", "primary": True}
                        ],
                    }

                for index in range(20):  # warm: prepared statements, caches
                    http.post(users, json=body(10_000 + index), headers=scim)
                reset(plain)
                for index in range(args.count):
                    created = http.post(users, json=body(index), headers=scim)
                    assert created.status_code == 201, created.text
                show("SCIM create", statements(plain, args.count))
                reset(plain)
                for index in range(args.count):
                    query = {"filter": f'userName eq "user{index}@stmt.example"'}
                    assert http.get(users, params=query, headers=scim).status_code == 200
                show("SCIM userName eq lookup", statements(plain, args.count))
                validator = RequestValidator(channel.token)
                path = f"/webhooks/twilio/{channel.channel_id}"
                reset(plain)
                for index in range(args.count):
                    sid = "SM" + uuid.uuid4().hex
                    params = params_for(channel, customer_of(index % 100), sid, f"hi {index}")
                    signature = validator.compute_signature(PUBLIC + path, params)
                    answer = http.post(
                        path,
                        content=urlencode(params),
                        headers={
                            "X-Twilio-Signature": signature,
                            "Content-Type": "application/x-www-form-urlencoded",
                        },
                    )
                    assert answer.status_code == 200, answer.text
                show("Twilio webhook (inbound WhatsApp message)", statements(plain, args.count))
        finally:
            stop(server)
            stop(fake)


if __name__ == "__main__":
    main()
