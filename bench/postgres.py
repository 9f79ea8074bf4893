"""A throwaway PostgreSQL cluster for the benchmark, made with Debian's postgresql-common.

``pg_createcluster VERSION bench<random> --port PORT --start`` (as root), a password for
the ``postgres`` role, one fresh database per configuration, and ``pg_dropcluster
--stop`` at the end, also when the run fails or is interrupted. Only loopback TCP is used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import psycopg
from procs import tree
from servers import LOOPBACK, ServerError, free_port


def installed_versions() -> list[str]:
    """PostgreSQL major versions with server binaries here, newest first."""
    base = Path("/usr/lib/postgresql")
    found = (
        [p.name for p in base.iterdir() if (p / "bin" / "postgres").exists()]
        if base.exists()
        else []
    )
    return sorted(found, key=lambda v: int(v) if v.isdigit() else 0, reverse=True)


def _run(argv: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C goes to us; we clean up, not half of initdb
    )


class PostgresCluster:
    """A cluster of our own on a free port; ``close()`` drops it (safe to call twice)."""

    def __init__(self, version: str | None = None) -> None:
        if os.geteuid() != 0:
            raise ServerError("pg_createcluster must run as root (or leave postgresql out)")
        if shutil.which("pg_createcluster") is None:
            raise ServerError("pg_createcluster is missing (Debian: apt-get install postgresql)")
        versions = installed_versions()
        if not versions:
            raise ServerError("no PostgreSQL server is installed under /usr/lib/postgresql")
        self.version = version or versions[0]
        self.name = "bench" + secrets.token_hex(4)
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.created = False
        self._postmaster: int | None = None

    @property
    def command(self) -> str:
        return f"pg_createcluster {self.version} {self.name} --port {self.port} --start"

    def start(self) -> None:
        self.created = True  # from here on, close() has something to drop
        done = _run(
            ["pg_createcluster", self.version, self.name, "--port", str(self.port), "--start"]
        )
        if done.returncode != 0:
            raise ServerError(f"`{self.command}` failed:\n{done.stdout}\n{done.stderr}")
        sql = f"ALTER USER postgres PASSWORD '{self.password}'"
        done = _run(["su", "postgres", "-c", f'psql -q -p {self.port} -c "{sql}"'])
        if done.returncode != 0:
            raise ServerError(f"setting the postgres password failed:\n{done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@{LOOPBACK}:{self.port}/{database}"

    def redacted_url(self, database: str) -> str:
        return self.url(database).replace(self.password, "<redacted>")

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(psycopg.Error), self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def database_bytes(self, name: str) -> int | None:
        with contextlib.suppress(psycopg.Error), self._admin() as conn:
            row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
            return int(row[0]) if row else None  # type: ignore[call-overload]
        return None

    def _data_dir(self) -> Path | None:
        done = _run(["pg_lsclusters", "-h", self.version, self.name], timeout_s=30)
        fields = done.stdout.split()
        return Path(fields[5]) if done.returncode == 0 and len(fields) >= 6 else None

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, WAL writer...)."""
        if self._postmaster is None:
            data_dir = self._data_dir()
            with contextlib.suppress(OSError, ValueError, IndexError, TypeError):
                pid_file = (data_dir / "postmaster.pid").read_text()  # type: ignore[operator]
                self._postmaster = int(pid_file.splitlines()[0])
        return tree(self._postmaster) if self._postmaster else []

    def close(self) -> str | None:
        """Stop and drop the cluster; returns a problem worth reporting, or None."""
        if not self.created:
            return None
        self.created = False
        done = _run(["pg_dropcluster", self.version, self.name, "--stop"])
        if done.returncode == 0:
            return None
        # A cluster interrupted while being created may be half there: stop what runs,
        # then remove what pg_createcluster made (all named after our random cluster name).
        _run(["pg_ctlcluster", self.version, self.name, "stop", "-m", "immediate"])
        leftovers = [
            Path("/etc/postgresql") / self.version / self.name,
            Path("/var/lib/postgresql") / self.version / self.name,
        ]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log").unlink()
        if any(p.exists() for p in leftovers):
            return f"could not drop PostgreSQL cluster {self.name}: {done.stderr.strip()}"
        return None
