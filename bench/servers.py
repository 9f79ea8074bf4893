"""Starting, watching and stopping the servers under test."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx2
import procs
import psycopg

BENCH_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A server did not start, or a setup command failed."""


def free_port() -> int:
    """A TCP port free on the loopback address right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _no_pids() -> list[int]:
    return []


def _no_data() -> int | None:
    return None


def _nothing_to_settle() -> None:
    return None


def vacuum_analyze(database_url: str) -> Callable[[], None]:
    """``VACUUM (ANALYZE)`` of the PostgreSQL database at ``database_url``, done after a
    bulk seeding as autovacuum would do soon after; otherwise its catch-up (it starts
    within a minute of a bulk load) lands in whichever measurement comes next."""

    def settle() -> None:
        plain = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")

    return settle


@dataclass
class Server:
    """A server process under test and how to reach its SCIM users endpoint."""

    name: str
    process: subprocess.Popen[bytes]
    users_url: str
    headers: dict[str, str]
    log_path: Path
    command: str  # how it was started, for the record
    # The processes of a database server it uses (PostgreSQL), for CPU accounting.
    database_pids: Callable[[], list[int]] = _no_pids
    # The size of its data on disk, or None if it keeps none.
    data_bytes: Callable[[], int | None] = _no_data
    # Run after a bulk seeding: the database's upkeep done before measuring (PostgreSQL).
    settle: Callable[[], None] = _nothing_to_settle
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def auth(self) -> str:
        """The Authorization header value wrk must send, or ``-`` for none."""
        return self.headers.get("Authorization", "-")

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the server."""
        parts = urlsplit(self.users_url)
        return f"{parts.scheme}://{parts.netloc}"

    def pids(self) -> list[int]:
        """The server process and its descendants (worker processes)."""
        return procs.tree(self.process.pid)

    def memory_kib(self) -> dict[str, int | None]:
        """Peak (VmHWM) and current (VmRSS) resident memory, summed over its processes."""
        return procs.memory_kib(self.pids())

    def children(self) -> list[int]:
        """The process ids of the server's descendants, if it has any."""
        return self.pids()[1:]

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM the server, then SIGKILL its process group if it outlives ``timeout_s``."""
        process = self.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # The server runs in a session of its own: reap anything it left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode


def _spawn(
    argv: list[str], env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log = log_path.open("ab")
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so nothing it starts outlives it
    )
    return process, log


def wait_ready(server: Server, url: str, timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the server exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx2.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerError(
                    f"{server.name} exited with {server.process.returncode} before it was "
                    f"ready:\n{server.log_tail()}"
                )
            try:
                response = client.get(url, headers=server.headers)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx2.TransportError as exc:
                last = repr(exc)
            time.sleep(0.2)
    raise ServerError(f"{server.name} not ready at {url} after {timeout_s:.0f} s: {last}")


# -- The peer ---------------------------------------------------------------------------


def start_peer(workdir: Path, *, loop: str, http: str) -> Server:
    """Serve bench/peer_app.py (scim2-server, async memory storage) on a free port."""
    port = free_port()
    argv = [
        sys.executable,
        str(BENCH_DIR / "peer_app.py"),
        "--host", LOOPBACK, "--port", str(port), "--loop", loop, "--http", http,
    ]  # fmt: skip
    log_path = workdir / "peer.log"
    process, log = _spawn(argv, dict(os.environ), log_path)
    shown = ["python", "bench/peer_app.py", *argv[2:]]
    server = Server(
        name="scim2-server",
        process=process,
        users_url=f"http://{LOOPBACK}:{port}/v2/Users",
        headers={},
        log_path=log_path,
        command=" ".join(shown),
        _log=log,
    )
    try:
        wait_ready(server, f"http://{LOOPBACK}:{port}/v2/ServiceProviderConfig")
    except BaseException:
        server.stop()
        raise
    return server


# -- The gateway ------------------------------------------------------------------------


def gateway_command() -> list[str]:
    """How to run the gateway's CLI: the console script next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "cloudlink-gateway"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cloudlink-gateway")
    if found:
        return [found]
    return [sys.executable, "-m", "gateway"]


def _gateway_json(argv: list[str], env: dict[str, str]) -> Any:
    command = [*gateway_command(), *argv]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise ServerError(
            f"`cloudlink-gateway {' '.join(argv)}` exited with {done.returncode}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    # The JSON document is the last line that parses as an object (logs may precede it).
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    raise ServerError(
        f"`cloudlink-gateway {' '.join(argv)}` printed no JSON:\n{done.stdout}\n{done.stderr}"
    )


@dataclass(frozen=True)
class GatewaySetup:
    """A gateway's database with an account and its SCIM keys, ready to be served."""

    env: dict[str, str]
    port: int
    users_url: str
    token: str
    shown_env: str  # the settings that differ from the defaults, for the record
    data_dir: Path | None = None  # the SQLite file's directory, if on SQLite
    data_bytes: Callable[[], int | None] = _no_data
    database_pids: Callable[[], list[int]] = _no_pids

    @property
    def sqlite_path(self) -> Path | None:
        return self.data_dir / "gateway.db" if self.data_dir is not None else None


def _dir_bytes(path: Path) -> Callable[[], int | None]:
    def size() -> int | None:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    return size


def prepare_gateway(
    data_dir: Path,
    *,
    database_url: str | None = None,
    shown_url: str | None = None,
    data_bytes: Callable[[], int | None] | None = None,
    database_pids: Callable[[], list[int]] = _no_pids,
    account_name: str = "bench",
) -> GatewaySetup:
    """Migrate a fresh database, create an account and its SCIM keys.

    Without ``database_url`` the gateway uses its embedded default, a SQLite file in
    ``data_dir`` (with ``GATEWAY_SQLITE_SYNCHRONOUS=FULL``, the default, set explicitly).
    """
    port = free_port()
    data_dir.mkdir(parents=True)
    # No GATEWAY_ setting from outside: only the ones chosen here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DRAIN_SECONDS"] = "0"  # stopped between runs, with nothing routing to it
    env |= {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "GATEWAY_PUBLIC_URL": f"http://{LOOPBACK}:{port}",
    }
    if database_url is None:
        env["GATEWAY_SQLITE_SYNCHRONOUS"] = "FULL"
        shown_env = "GATEWAY_SQLITE_SYNCHRONOUS=FULL"
    else:
        env["GATEWAY_DATABASE_URL"] = database_url
        # On PostgreSQL the key of stored secrets comes from the environment (a Fernet key).
        env["GATEWAY_SECRET_KEYS"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        shown_env = (
            f"GATEWAY_DATABASE_URL={shown_url or '<redacted>'} GATEWAY_SECRET_KEYS=<redacted>"
        )
    account = _gateway_json(["account", "create", "--name", account_name, "--json"], env)
    keys = _gateway_json(["scim-keys", str(account["id"]), "--json"], env)
    return GatewaySetup(
        env=env,
        port=port,
        users_url=str(keys["tenant_url"]).rstrip("/") + "/Users",
        token=str(keys["secret_token"]),
        shown_env=shown_env,
        data_dir=data_dir if database_url is None else None,
        data_bytes=data_bytes or _dir_bytes(data_dir),
        database_pids=database_pids,
    )


def serve_gateway(
    setup: GatewaySetup,
    *,
    workers: int,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """``cloudlink-gateway serve --workers N`` on the setup's port, ready at /readyz."""
    port = setup.port
    argv = [
        *gateway_command(),
        "serve", "--host", LOOPBACK, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    env = setup.env | (extra_env or {})
    process, log = _spawn(argv, env, log_path)
    shown_env = " ".join([setup.shown_env, *(f"{k}={v}" for k, v in (extra_env or {}).items())])
    server = Server(
        name="cloudlink-gateway",
        process=process,
        users_url=setup.users_url,
        headers={"Authorization": f"Bearer {setup.token}"},
        log_path=log_path,
        command=f"{shown_env} cloudlink-gateway serve --host {LOOPBACK} --port {port} "
        f"--workers {workers}",
        database_pids=setup.database_pids,
        data_bytes=setup.data_bytes,
        settle=vacuum_analyze(url)
        if (url := env.get("GATEWAY_DATABASE_URL"))
        else _nothing_to_settle,
        _log=log,
    )
    try:
        wait_ready(server, f"http://{LOOPBACK}:{port}/readyz")
    except BaseException:
        server.stop()
        raise
    return server
