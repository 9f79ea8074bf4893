"""A real gateway server process (`cloudlink-gateway serve`), started as an operator starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

from tests.support.live import free_port


@dataclass
class ServerProcess:
    """The running server: its base URL and its supervisor process."""

    url: str
    process: subprocess.Popen[str]

    def worker_pids(self) -> list[int]:
        """The worker processes serving requests (children of the supervisor)."""
        pids = []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in children.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                pids.append(int(pid))
        return sorted(pids)

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker, as the OOM killer would."""
        os.kill(pid, signal.SIGKILL)


def server_env(
    data_dir: Path, database_url: str, *, admin_token: str, secret_key: str, **settings: str
) -> dict[str, str]:
    """The environment of a test's ``serve`` process: this one's, the database, the admin
    token and the secret key, warnings only, and ``settings`` (``GATEWAY_...`` names)."""
    return {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_ADMIN_TOKEN": admin_token,
        "GATEWAY_SECRET_KEYS": secret_key,
        "GATEWAY_LOG_LEVEL": "WARNING",
        **settings,
    }


def _wait_ready(server: ServerProcess, workers: int) -> None:
    deadline = time.monotonic() + 60
    with httpx2.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError("the server exited during start")
            try:
                ready = http.get(server.url + "/readyz").status_code == 200
            except httpx2.TransportError:
                ready = False
            if ready and (workers == 1 or len(server.worker_pids()) == workers):
                return
            time.sleep(0.05)
    raise RuntimeError("the server did not become ready")


@contextmanager
def serving(
    env: dict[str, str], *, workers: int = 1, output: Path | None = None
) -> Iterator[ServerProcess]:
    """Run `serve --workers N` on a free port with ``env``; stop it at the end.

    What the server prints (its welcome text, its logs) goes to ``output`` if given.
    """
    port = free_port()
    sink = output.open("w") if output is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=sink if sink is not None else subprocess.DEVNULL,
        text=True,
    )
    server = ServerProcess(f"http://127.0.0.1:{port}", process)
    try:
        _wait_ready(server, workers)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if sink is not None:
            sink.close()
