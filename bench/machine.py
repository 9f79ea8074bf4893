"""The machine, the versions and the commit a benchmark ran with."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "cloudlink-gateway",
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "sqlalchemy",
    "psycopg",
    "scim2-server",
)
GATEWAY_SOURCES = ("gateway", "storage", "observability", "pyproject.toml")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(wrk_version: str, postgres_version: str | None = None) -> dict[str, str]:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    info = {
        "nproc": nproc or str(os.cpu_count()),
        "CPU": _cpu_model(),
        "memory": _memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "wrk": wrk_version,
    }
    if postgres_version:
        info["PostgreSQL"] = postgres_version
    info.update({package: _version(package) for package in PACKAGES})
    info["cloudlink-gateway commit"] = commit()
    return info


def commit() -> str:
    """The repository's commit, and whether the gateway's sources differ from it."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    changed = git("status", "--porcelain", "--", *GATEWAY_SOURCES)
    return f"{commit} (with uncommitted changes)" if changed else commit
