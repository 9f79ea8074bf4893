"""The gateway's configurations (database, worker processes) and benchmarking each one.

Each configuration gets a fresh database (a SQLite file in its own data dir, or a new
database in the run's throwaway PostgreSQL cluster), is seeded and measured on its own,
and on SQLite is then served again for the lock-hold experiment.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from lock_hold import LockResult, LockSettings, run_lock_hold
from lock_report import describe
from postgres import PostgresCluster, installed_versions
from report import GATEWAY, ServerRun
from servers import GatewaySetup, ServerError, prepare_gateway, serve_gateway
from steps import bench_server, log, read_log
from wrk_runner import LoadSettings

DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass(frozen=True)
class Config:
    """One gateway configuration: its database and its number of worker processes."""

    database: str  # a key of DATABASES
    workers: int

    @property
    def key(self) -> str:
        return f"gateway-{self.database}-{self.workers}w"

    @property
    def label(self) -> str:
        plural = "s" if self.workers > 1 else ""
        return f"gateway, {DATABASES[self.database]}, {self.workers} worker{plural}"


def configurations(args: argparse.Namespace) -> list[Config]:
    """The gateway configurations the options ask for: every database with every worker count."""
    if "gateway" not in args.servers:
        return []
    return [Config(db, w) for db in args.databases for w in dict.fromkeys(args.workers)]


def postgres_version(version: str | None) -> str | None:
    """``postgres --version`` of the version the cluster will run, e.g. ``15.14 (Debian ...)``."""
    versions = [version] if version else installed_versions()[:1]
    if not versions:
        return None
    binary = Path("/usr/lib/postgresql") / versions[0] / "bin" / "postgres"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip().removeprefix("postgres (PostgreSQL) ") or None
    return None


class Postgres:
    """The throwaway cluster, created on first use; its failure fails its configurations."""

    def __init__(self, version: str | None) -> None:
        self.version = version
        self.cluster: PostgresCluster | None = None
        self.error: str | None = None

    def get(self) -> PostgresCluster:
        """The cluster, created and started by the first call."""
        if self.error is not None:
            raise ServerError(self.error)
        if self.cluster is None:
            try:
                self.cluster = PostgresCluster(self.version)
                log(f"PostgreSQL: {self.cluster.command}")
                self.cluster.start()
            except (ServerError, OSError, subprocess.SubprocessError) as exc:
                self.error = f"no PostgreSQL cluster: {exc}"
                raise ServerError(self.error) from exc
        return self.cluster

    def close(self) -> None:
        """Stop and drop the cluster, if one was made."""
        if self.cluster is not None:
            problem = self.cluster.close()
            log(problem or f"PostgreSQL: dropped cluster {self.cluster.name}")


def _prepare(config: Config, workdir: Path, postgres: Postgres) -> tuple[GatewaySetup, str | None]:
    """A fresh database for ``config``; returns its setup and its PostgreSQL name, if any."""
    data_dir = workdir / config.key
    if config.database == "sqlite":
        return prepare_gateway(data_dir), None
    cluster = postgres.get()
    name = config.key.replace("-", "_")
    try:
        url = cluster.create_database(name)
    except psycopg.Error as exc:
        raise ServerError(f"creating database {name} failed: {exc}") from exc
    setup = prepare_gateway(
        data_dir,
        database_url=url,
        shown_url=cluster.redacted_url(name),
        data_bytes=lambda: cluster.database_bytes(name),
        database_pids=cluster.pids,
    )
    return setup, name


def lock_experiment(
    config: Config, setup: GatewaySetup, workdir: Path, args: argparse.Namespace
) -> LockResult:
    """The gateway again, on the data of its benchmark, while another process holds the lock."""
    settings = LockSettings(hold_s=args.lock_hold, lock_timeout_s=args.lock_timeout)
    result = LockResult(label=config.label, workers=config.workers, settings=settings, command="")
    log(f"{config.label}: lock-hold experiment")
    log_path = workdir / f"{config.key}-lock.log"
    try:
        server = serve_gateway(
            setup,
            workers=config.workers,
            log_path=log_path,
            extra_env={"GATEWAY_DATABASE_LOCK_TIMEOUT": f"{args.lock_timeout:g}"},
        )
    except ServerError as exc:
        result.error = f"could not start: {exc}"
        log(f"  FAILED: {result.error}")
        return result
    result.command = server.command
    try:
        assert setup.sqlite_path is not None
        run_lock_hold(server, setup.sqlite_path, args.users, settings, result, log)
        log(describe(result))
    except Exception as exc:  # a load process or a check failed: report it, go on
        result.error = f"{type(exc).__name__}: {exc}"
        log(f"  FAILED: {result.error}")
    finally:
        server.stop()
    _, result.log_errors = read_log(log_path)
    return result


def bench_gateway(
    config: Config,
    workdir: Path,
    postgres: Postgres,
    args: argparse.Namespace,
    settings: LoadSettings,
) -> tuple[ServerRun, LockResult | None]:
    """Benchmark one configuration on a fresh database, then (SQLite) the lock hold."""
    database = DATABASES[config.database]
    try:
        setup, pg_name = _prepare(config, workdir, postgres)
    except ServerError as exc:
        log(f"{config.label}: could not prepare: {exc}")
        run = ServerRun(
            name=GATEWAY,
            label=config.label,
            command="",
            auth="",
            users=args.users,
            database=database,
            workers=config.workers,
            error=str(exc),
        )
        return run, None
    try:
        run = bench_server(
            GATEWAY,
            config.label,
            lambda: serve_gateway(
                setup, workers=config.workers, log_path=workdir / f"{config.key}.log"
            ),
            args,
            settings,
            database=database,
            workers=config.workers,
        )
        lock = None
        if config.database == "sqlite" and args.lock_hold > 0 and run.error is None:
            lock = lock_experiment(config, setup, workdir, args)
    finally:
        if pg_name is not None and postgres.cluster is not None:
            postgres.cluster.drop_database(pg_name)
    return run, lock
