"""Benchmark of signed Twilio webhooks into the gateway, against the limit of one process.

    python bench/webhooks.py          # every configuration; rewrites its docs section
    python bench/webhooks.py --quick  # a short check of the harness

What it measures, each configuration on a fresh database:

- Inbound: new WhatsApp messages (each its own MessageSid and I-Twilio-Idempotency-Token, a
  form body of about 500 bytes as Twilio posts it) from 100 customers whose conversations
  are open, signed with the ``twilio`` package over a public URL the server does not bind
  (https://hooks.example.com), the signature check on; wrk, 32 connections, 8 s. The gateway
  on the embedded default (SQLite, synchronous FULL) with 1 and 2 workers; on PostgreSQL with
  one busy account and spread over 10. After each run: every acknowledged webhook stored
  once, in the feed once, no answer but 200.
- The limit, in the same run: one uvicorn process with ``serve``'s options running a bare
  Starlette endpoint that parses the form and answers empty TwiML, under the same requests.
- The write alone (``bench/write_path.py``): the unit each webhook runs, called directly in
  one process, on SQLite; no HTTP. The gateway on SQLite cannot store webhooks faster.
- Outbox: replies queued while delivery is off, then delivered by one process to the fake
  Twilio API (a process of its own); messages per second from the first send to the last.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from fake_provider import account  # noqa: E402
from machine import commit, machine_info  # noqa: E402
from postgres import PostgresCluster  # noqa: E402
from procs import memory_kib, tree  # noqa: E402
from servers import free_port  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402
from wrk_runner import LoadSettings, Watched, WrkResult, run_wrk, wrk_version  # noqa: E402

PUBLIC = "https://hooks.example.com"
CUSTOMERS = 100
ADMIN = "bench-admin-" + secrets.token_hex(16)
SECTION_START = "<!-- webhooks:start -->"
SECTION_END = "<!-- webhooks:end -->"


@dataclass
class Channel:
    """One account's WhatsApp channel as the benchmark drives it."""

    account_id: str
    channel_id: str
    sid: str
    token: str
    number: str
    conversations: list[str] = field(default_factory=list)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=sink, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url, timeout=2).status_code < 500:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def gateway_env(
    data_dir: Path, database_url: str | None, fake_url: str, **extra: str
) -> dict[str, str]:
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_PUBLIC_URL": PUBLIC,
        "GATEWAY_ADMIN_TOKEN": ADMIN,
        "GATEWAY_TWILIO_API_URL": fake_url,
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_SECRET_KEYS": "tDC1qomeyDzEI3V1fSPZ2gVYQj2bBV6hYMQ_IVBWRYk=",
        "GATEWAY_DRAIN_SECONDS": "0",  # stopped between runs, with nothing routing to it
        **extra,
    }
    env.pop("GATEWAY_DATABASE_URL", None)
    if database_url:
        env["GATEWAY_DATABASE_URL"] = database_url
    return env


def start_fake(workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """The fake provider (fake_provider.py) on a free port, answering; and its URL."""
    port = free_port()
    process = start(
        [sys.executable, str(HERE / "fake_provider.py"), "--port", str(port), *extra],
        dict(os.environ),
        workdir / "fake.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stats")
    return process, url


def serve(env: dict[str, str], workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = start(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)],
        env,
        log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz")
    return process, url


def params_for(channel: Channel, customer: str, sid: str, text_: str) -> dict[str, str]:
    """An inbound WhatsApp message's parameters, as Twilio posts them."""
    return {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ProfileName": "Customer " + customer[-3:],
        "MessageType": "text",
        "SmsSid": sid,
        "WaId": customer.lstrip("+"),
        "SmsStatus": "received",
        "Body": text_,
        "To": "whatsapp:" + channel.number,
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": sid,
        "AccountSid": channel.sid,
        "From": "whatsapp:" + customer,
        "ApiVersion": "2010-04-01",
        "MessagingServiceSid": "",
    }


def customer_of(index: int) -> str:
    return f"+316{index:08d}"


def set_up(url: str, accounts: int, customers: int = CUSTOMERS) -> list[Channel]:
    """Accounts with Twilio, a WhatsApp channel each, and ``customers`` open conversations
    in all."""
    channels = []
    with httpx2.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    ) as http:
        for index in range(accounts):
            sid, token, number = account(index)
            account_id = http.post("/api/v1/accounts", json={"name": f"Bench {index}"}).json()["id"]
            base = f"/api/v1/accounts/{account_id}"
            done = http.put(
                base + "/integrations/twilio/settings",
                json={"name": "Twilio", "account_sid": sid, "auth_token": token},
            )
            done.raise_for_status()
            channel = http.post(
                base + "/channels",
                json={"provider": "twilio", "type": "whatsapp", "number": number, "queue_id": "q"},
            )
            channel.raise_for_status()
            channels.append(Channel(account_id, channel.json()["id"], sid, token, number))
        for index in range(customers):
            channel = channels[index % accounts]
            params = params_for(channel, customer_of(index), "SM" + uuid.uuid4().hex, "Hello")
            path = f"/webhooks/twilio/{channel.channel_id}"
            signature = RequestValidator(channel.token).compute_signature(PUBLIC + path, params)
            answer = http.post(path, data=params, headers={"X-Twilio-Signature": signature})
            answer.raise_for_status()
        for channel in channels:
            found = http.get(f"/api/v1/accounts/{channel.account_id}/conversations?limit=200")
            channel.conversations = [c["id"] for c in found.json()["items"]]
    return channels


PADDING = "Hello, I ordered a blue kettle last week (order 0000) and it has not arrived yet. "


def prepare(channels: list[Channel], count: int, path: Path, customers: int = CUSTOMERS) -> None:
    """``count`` signed webhooks, one per line, for bench/wrk/webhook.lua."""
    validators = {c.channel_id: RequestValidator(c.token) for c in channels}
    with path.open("w") as out:
        for index in range(count):
            channel = channels[index % len(channels)]
            customer = customer_of(index % customers)
            params = params_for(channel, customer, "SM" + uuid.uuid4().hex, PADDING + str(index))
            target = f"/webhooks/twilio/{channel.channel_id}"
            signature = validators[channel.channel_id].compute_signature(PUBLIC + target, params)
            out.write(f"{target}\t{signature}\t{uuid.uuid4()}\t{urlencode(params)}\n")


def stored(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT provider_message_id) FROM messages "
                    "WHERE direction = 'inbound'"
                )
            ).one()
            events = conn.execute(
                text("SELECT count(*) FROM events WHERE type = 'message.received'")
            ).scalar_one()
    finally:
        engine.dispose()
    return {"messages": row[0], "distinct": row[1], "events": events}


def acked(result: WrkResult) -> int:
    return result.requests - result.unexpected_status


def load(
    url: str,
    requests_file: Path,
    duration: int,
    connections: int,
    watched: Watched | None = None,
) -> WrkResult:
    settings = LoadSettings(threads=2, connections=connections, duration_s=duration, warmup_s=0)
    result, _ = run_wrk(
        url, "webhook.lua", [str(requests_file), "2"], duration, settings, watched=watched
    )
    return result


def webhook_run(
    name: str,
    *,
    workdir: Path,
    fake_url: str,
    database_url: str | None,
    workers: int,
    accounts: int,
    args: argparse.Namespace,
    database_pids: Callable[[], list[int]] = list,
) -> dict[str, Any]:
    """One configuration: fresh database, set-up, warm-up, measured run, checks."""
    data = workdir / name
    env = gateway_env(data, database_url, fake_url)
    process, url = serve(env, workers, workdir / f"{name}.log")
    try:
        channels = set_up(url, accounts, args.customers)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        warm_file, run_file = workdir / f"{slug}-warm.txt", workdir / f"{slug}-run.txt"
        prepare(channels, args.warmup_requests, warm_file, args.customers)
        prepare(channels, args.requests, run_file, args.customers)
        warm = load(url, warm_file, args.warmup, args.connections)
        watched = Watched(server=lambda: tree(process.pid), database=database_pids)
        result = load(url, run_file, args.duration, args.connections, watched)
        memory = memory_kib(tree(process.pid))
        time.sleep(1)
    finally:
        stop(process)
    found = stored(database_url or f"sqlite:///{data / 'gateway.db'}")
    sent = args.customers + acked(warm) + acked(result)
    extra = found["messages"] - sent
    return {
        "name": name,
        "workers": workers,
        "accounts": accounts,
        "rps": acked(result) / result.duration_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "non_200": result.unexpected_status + sum(result.socket_errors.values()),
        "acknowledged": acked(result),
        "stored": found,
        "unacknowledged_but_stored": extra,
        "exactly_once": found["messages"] == found["distinct"] == found["events"]
        and 0 <= extra <= 2 * args.connections,
        "memory_kib": memory,
        "command": result.command,
        "wrk_cpu_pct": result.wrk_cpu_pct,
        "server_cpu_pct": result.server_cpu_pct,
        "database_cpu_pct": result.database_cpu_pct,
    }


def write_path_run(workdir: Path, fake_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The write alone (bench/write_path.py) on a data directory the gateway set up: best of 2."""
    data = workdir / "write-path"
    env = gateway_env(data, None, fake_url)
    process, url = serve(env, 1, workdir / "write-path.log")
    try:
        [channel] = set_up(url, 1, args.customers)
    finally:
        stop(process)
    command = [
        sys.executable,
        str(HERE / "write_path.py"),
        channel.channel_id,
        "--count",
        str(args.write_units),
        "--in-flight",
        str(args.connections),
        "--customers",
        str(args.customers),
    ]
    rates = []
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rates.append(json.loads(done.stdout.strip().splitlines()[-1])["per_second"])
    found = stored(f"sqlite:///{data / 'gateway.db'}")
    return {
        "name": f"the write alone, no HTTP: 1 process, {args.connections} in flight",
        "rps": max(rates),
        "rates": rates,
        "stored": found,
        "exactly_once": found["messages"] == found["distinct"] == found["events"]
        and found["messages"] == args.customers + 2 * args.write_units,
    }


def limit_run(workdir: Path, channels_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    process = start(
        [sys.executable, str(HERE / "limit_app.py"), "--port", str(port)],
        dict(os.environ),
        workdir / "limit.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/")
        load(url, channels_file, args.warmup, args.connections)
        result = load(url, channels_file, args.duration, args.connections)
    finally:
        stop(process)
    return {
        "name": "limit: bare Starlette + uvicorn, 1 process",
        "rps": acked(result) / result.duration_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "non_200": result.unexpected_status + sum(result.socket_errors.values()),
        "command": result.command,
    }


def outbox_run(
    workdir: Path, fake_url: str, args: argparse.Namespace, workers: int
) -> dict[str, Any]:
    """Replies queued with delivery off, then sent by ``workers`` processes: messages/s."""
    data = workdir / f"outbox-{workers}"
    off = gateway_env(data, None, fake_url, GATEWAY_DELIVERY_ENABLED="false")
    process, url = serve(off, 1, workdir / "outbox.log")
    try:
        channels = set_up(url, 1)
        paths = workdir / "reply-paths.txt"
        paths.write_text(
            "\n".join(
                f"/api/v1/accounts/{c.account_id}/conversations/{cid}/messages"
                for c in channels
                for cid in c.conversations
            )
            + "\n"
        )
        settings = LoadSettings(
            threads=2, connections=16, duration_s=args.queue_seconds, warmup_s=0
        )
        run_wrk(url, "reply.lua", [str(paths), f"Bearer {ADMIN}"], args.queue_seconds, settings)
    finally:
        stop(process)
    engine = create_engine(f"sqlite:///{data / 'gateway.db'}")
    with engine.connect() as conn:
        queued = conn.execute(
            text("SELECT count(*) FROM outbox WHERE kind = 'message.send'")
        ).scalar_one()
    engine.dispose()
    before = httpx2.get(fake_url + "/_stats").json()["sent"]
    process, url = serve(gateway_env(data, None, fake_url), workers, workdir / "outbox.log")
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            stats = httpx2.get(fake_url + f"/_stats?skip={before}").json()
            if stats["sent"] - before >= queued:
                break
            time.sleep(0.2)
        memory = memory_kib(tree(process.pid))
    finally:
        stop(process)
    sent = stats["sent"] - before
    return {
        "workers": workers,
        "queued": queued,
        "sent": sent,
        "seconds": stats["last"] - stats["first"] if stats["first"] else None,
        "per_second": sent / (stats["last"] - stats["first"]) if stats["first"] else 0.0,
        "memory_kib": memory,
    }


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        SECTION_START,
        "## Messaging webhooks",
        "",
        f"`python bench/webhooks.py` at commit `{results['commit']}`, {results['date']}; "
        f"machine: {info.get('CPU', '?')}, {info.get('nproc', '?')} CPUs, "
        f"{info.get('memory', '?')}, {info.get('OS', '')}, {info.get('Python', '')}, "
        f"wrk {results['wrk']}.",
        "",
        "Signed Twilio inbound WhatsApp webhooks (new MessageSid and idempotency token each, "
        f"~500-byte form, {results.get('customers', CUSTOMERS):,} customers with open "
        "conversations, signed over a public URL the "
        "server does not bind), `wrk -t2 -c32 -d8s` after a warm-up; each configuration on a "
        "fresh database. The limit is one uvicorn process with `serve`'s options running a "
        "bare Starlette endpoint that parses the form and answers empty TwiML.",
        "",
        "The write alone (`bench/write_path.py`, the better of two runs) is the unit a "
        "webhook runs, called directly in one process with as many in flight as wrk keeps "
        "open, on the same data: no request parsed, no signature checked, no answer written. "
        "It bounds the gateway on SQLite, whose writers (one a process) take turns at the "
        "file's one write lock.",
        "",
        "CPU % is the share of one CPU used during the measured run by the server's processes "
        "and by PostgreSQL's; CPU ms is that per webhook.",
        "",
        "| configuration | webhooks/s | vs limit | p50 ms | p99 ms | non-200 "
        "| stored exactly once | RSS MiB | CPU % server / database | CPU ms server / database |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    limit = results["limit"]["rps"]
    for run in results["runs"]:
        rss = (run["memory_kib"].get("vm_rss_kib") or 0) / 1024
        lines.append(
            f"| {run['name']} | {run['rps']:,.0f} | {run['rps'] / limit:.2f}x "
            f"| {run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['non_200']} "
            f"| {'yes' if run['exactly_once'] else 'NO'} ({_stored(run)}) | {rss:.0f} "
            f"| {_cpu(run)} |"
        )
    write = results.get("write_path")
    if write:
        lines.append(
            f"| {write['name']} | {write['rps']:,.0f} | {write['rps'] / limit:.2f}x | | | "
            f"| {'yes' if write['exactly_once'] else 'NO'} "
            f"({write['stored']['messages']:,} stored) | | | |"
        )
    lines.append(
        f"| {results['limit']['name']} | {limit:,.0f} | 1.00x | {results['limit']['p50_ms']:.1f} | "
        f"{results['limit']['p99_ms']:.1f} | {results['limit']['non_200']} | | | | |"
    )
    for outbox in results.get("outbox") or []:
        rss = (outbox["memory_kib"].get("vm_rss_kib") or 0) / 1024
        lines += [
            "",
            f"Outbox, {outbox['workers']} worker process(es): {outbox['queued']:,} replies "
            "queued with delivery off, then sent to the fake Twilio API (a process of its "
            f"own): **{outbox['per_second']:,.0f} messages/s** ({outbox['sent']:,} in "
            f"{outbox['seconds'] or 0:.1f} s), RSS {rss:.0f} MiB.",
        ]
    lines += [
        "",
        "Command of a measured run (REQUESTS: the prepared requests, one per line): "
        + "; ".join(f"`{_shown(r['command'])}`" for r in results["runs"][:1]),
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def _cpu(run: dict[str, Any]) -> str:
    """CPU shares and CPU time per acknowledged webhook: the server's, the database's."""
    server, database = run.get("server_cpu_pct", 0.0), run.get("database_cpu_pct", 0.0)
    per = 10 / run["rps"] if run["rps"] else 0.0  # % of a CPU over req/s, in ms
    return f"{server:.0f} / {database:.0f} | {server * per:.2f} / {database * per:.2f}"


def _stored(run: dict[str, Any]) -> str:
    """What was stored; when a check failed, every count it compared."""
    found = run["stored"]
    if run["exactly_once"]:
        return f"{found['messages']:,} stored"
    return (
        f"{found['messages']:,} messages, {found['distinct']:,} distinct, "
        f"{found['events']:,} events, {run['unacknowledged_but_stored']:+,} against acknowledged"
    )


def _shown(command: str) -> str:
    """A wrk command as the docs show it: no temporary paths, no port."""
    command = re.sub(r"'?/tmp/\S*?-run\.txt'?", "REQUESTS", command)
    return re.sub(r"http://127\.0\.0\.1:[0-9]+", "http://127.0.0.1:PORT", command)


def write_docs(section: str, path: Path) -> None:
    current = path.read_text() if path.exists() else ""
    if SECTION_START in current:
        before = current.split(SECTION_START, 1)[0]
        after = current.split(SECTION_END, 1)[1] if SECTION_END in current else ""
        path.write_text(before + section + after.lstrip("\n"))
    else:
        path.write_text(current.rstrip("\n") + "\n\n" + section)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=60_000, help="prepared per measured run")
    parser.add_argument("--warmup-requests", type=int, default=15_000)
    parser.add_argument("--queue-seconds", type=int, default=5, help="queueing replies, outbox run")
    parser.add_argument(
        "--write-units", type=int, default=20_000, help="messages a run of the write alone"
    )
    parser.add_argument(
        "--customers", type=int, default=CUSTOMERS, help="customers with open conversations"
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="short runs, no docs")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.requests, args.warmup_requests = 3, 1, 15_000, 8_000
        args.queue_seconds, args.no_docs, args.write_units = 2, True, 3_000
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as temp:
        workdir = Path(temp)
        fake, fake_url = start_fake(workdir, "--accounts", "10")
        cluster = None
        try:
            runs = []
            for workers in (1, 2):
                runs.append(
                    webhook_run(
                        f"gateway, SQLite, {workers} worker(s)",
                        workdir=workdir,
                        fake_url=fake_url,
                        database_url=None,
                        workers=workers,
                        accounts=1,
                        args=args,
                    )
                )
                print(json.dumps(runs[-1], default=str), flush=True)
            write_path = write_path_run(workdir, fake_url, args)
            print(json.dumps(write_path, default=str), flush=True)
            first = re.sub(r"[^a-z0-9]+", "-", runs[0]["name"].lower()).strip("-")
            limit = limit_run(workdir, workdir / f"{first}-run.txt", args)
            print(json.dumps(limit), flush=True)
            if not args.no_postgres:
                cluster = PostgresCluster()
                cluster.start()
                for workers, accounts in ((1, 1), (2, 1), (2, 10)):
                    name = f"bench_{workers}_{accounts}"
                    url = cluster.create_database(name).replace(
                        "postgresql://", "postgresql+psycopg://"
                    )
                    runs.append(
                        webhook_run(
                            f"gateway, PostgreSQL, {workers} worker(s), {accounts} account(s)",
                            workdir=workdir,
                            fake_url=fake_url,
                            database_url=url,
                            workers=workers,
                            accounts=accounts,
                            args=args,
                            database_pids=cluster.pids,
                        )
                    )
                    print(json.dumps(runs[-1], default=str), flush=True)
            outbox = [outbox_run(workdir, fake_url, args, workers) for workers in (1, 2)]
            print(json.dumps(outbox), flush=True)
        finally:
            stop(fake)
            if cluster is not None:
                cluster.close()
    results = {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(wrk_version()),
        "wrk": wrk_version(),
        "runs": runs,
        "limit": limit,
        "write_path": write_path,
        "outbox": outbox,
        "customers": args.customers,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    section = markdown(results)
    print(section)
    if not args.no_docs:
        write_docs(section, ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
