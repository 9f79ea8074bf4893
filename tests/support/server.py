"""A real gateway server process (`cloudlink-gateway serve`), started as an operator starts it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx2

from tests.support.live import free_port


@dataclass
class ServerProcess:
    """The running server: its base URL and its supervisor process."""

    url: str
    process: subprocess.Popen[str]
    # Where its stderr goes (its logs), read back when it fails to start.
    output: Path | None = None
    # A file of its own, removed when the server stops.
    own_output: bool = False

    def last_output(self, lines: int = 40) -> str:
        """The end of what the server printed, or a note that it was not kept."""
        if self.output is None:
            return "(its output was not kept)"
        try:
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(its output could not be read: {exc})"

    def worker_pids(self) -> list[int]:
        """The worker processes serving requests (children of the supervisor)."""
        pids = []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in children.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                pids.append(int(pid))
        return sorted(pids)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def sockets(self, state: str) -> set[int]:
        """Inodes of the TCP sockets on the server's port in ``state`` (``LISTENING``,
        ``ESTABLISHED``), from /proc/net/tcp and tcp6."""
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == self.port and fields[3] == state:
                    found.add(int(fields[9]))
        return found

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker, as the OOM killer would."""
        os.kill(pid, signal.SIGKILL)


# Socket states in /proc/net/tcp.
LISTENING = "0A"
ESTABLISHED = "01"


def held_by(pid: int, inodes: set[int]) -> set[int]:
    """Which of the socket ``inodes`` process ``pid`` has open."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(int(target[8:-1]))
    return held & inodes


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


def _listening_here(server: ServerProcess, workers: int) -> bool:
    """Whether this server's own processes listen on its port, one socket a worker.

    A ``/readyz`` answer alone is not enough: a server of a parallel test that drew the
    same free port and bound it first answers it, while this one fails to bind and exits
    (a test then set an account up on the other test's server and its fakes).
    """
    pids = [server.process.pid] if workers == 1 else server.worker_pids()
    listening = server.sockets(LISTENING)
    try:
        held = [held_by(pid, listening) for pid in pids]
    except OSError:  # a process gone meanwhile
        return False
    return sum(len(sockets) for sockets in held) == workers


def wait_ready(server: ServerProcess, workers: int) -> None:
    deadline = time.monotonic() + 60
    with httpx2.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited during start (code {server.process.returncode}); "
                    f"it printed:\n{server.last_output()}"
                )
            try:
                ready = http.get(server.url + "/readyz").status_code == 200
            except httpx2.TransportError:
                ready = False
            if ready and _listening_here(server, workers):
                return
            time.sleep(0.05)
    raise RuntimeError(f"the server did not become ready; it printed:\n{server.last_output()}")


def start_server(
    env: dict[str, str], workers: int, sink: IO[str] | None, port: int | None = None
) -> ServerProcess:
    """Start `serve` on ``port`` (a free one by default); its stderr goes to ``sink``, or to
    a file of its own (so that a server that fails to start says why in the test's
    failure)."""
    port = port or free_port()
    own_output = sink is None
    if sink is None:
        sink = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, removed at stop)
            "w", prefix="serve-", suffix=".log", delete=False
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)],
        # Stopped at the end of each test: no load balancer to drain for, unless asked.
        env={"GATEWAY_DRAIN_SECONDS": "0", **env},
        stdout=subprocess.DEVNULL,
        stderr=sink,
        text=True,
    )
    output = Path(sink.name) if isinstance(getattr(sink, "name", None), str) else None
    if own_output:
        sink.close()
    return ServerProcess(f"http://127.0.0.1:{port}", process, output, own_output)


def stop_server(server: ServerProcess) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
    if server.own_output and server.output is not None:
        server.output.unlink(missing_ok=True)


@contextmanager
def serving(
    env: dict[str, str], *, workers: int = 1, output: Path | None = None, port: int | None = None
) -> Iterator[ServerProcess]:
    """Run `serve --workers N` on ``port`` (a free one by default) with ``env``; stop it at
    the end (a test that gives its public URL picks the port first).

    What the server prints (its welcome text, its logs) goes to ``output`` if given.
    """
    with serving_together([env], workers=workers, outputs=[output], port=port) as [server]:
        yield server


@contextmanager
def serving_together(
    envs: Sequence[dict[str, str]],
    *,
    workers: int = 1,
    outputs: Sequence[Path | None] | None = None,
    port: int | None = None,
) -> Iterator[list[ServerProcess]]:
    """Start one `serve` per environment at the same moment (replicas started together),
    then wait until every one is ready; stop them all at the end."""
    with ExitStack() as stack:
        sinks = [
            stack.enter_context(path.open("w")) if path is not None else None
            for path in (outputs or [None] * len(envs))
        ]
        servers = [
            start_server(env, workers, sink, port) for env, sink in zip(envs, sinks, strict=True)
        ]
        try:
            for server in servers:
                wait_ready(server, workers)
            yield servers
        finally:
            for server in servers:
                stop_server(server)
