"""Prometheus metrics of one gateway app.

Each app owns its own registry, so tests can build many apps in one process. Labels
come from small fixed sets (route template, method, status class, operation, outcome);
never an id, an email, a token or a URL.

With several worker processes (``serve --workers N``), ``serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a directory it owns; every process writes its values
there and a scrape, whichever worker answers it, sums the files of all of them.
Counters keep the counts of a worker that died; its live gauges (requests in
progress) are dropped at the next scrape.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "cloudlink_gateway"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")
_FILE_PID = re.compile(r"_(\d+)\.db$")
METRICS_DIR_PREFIX = "cloudlink-gateway-metrics-"
_OWNER = re.compile(rf"^{METRICS_DIR_PREFIX}(\d+)-")
LEGACY_GRACE_SECONDS = 60.0


@dataclass
class Metrics:
    """The gateway's instruments, registered on one registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.http_requests = Counter(
            f"{PREFIX}_http_requests_total",
            "HTTP requests answered, by route template, method and status class.",
            ["route", "method", "status_class"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from request start to the end of the response body.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_in_progress = Gauge(
            f"{PREFIX}_http_requests_in_progress",
            "HTTP requests being served now (summed over live worker processes).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.db_commit_units = Histogram(
            f"{PREFIX}_db_commit_units",
            "Write units per database commit (above 1: group commit shared one fsync).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.scim_operations = Counter(
            f"{PREFIX}_scim_operations_total",
            "SCIM operations by operation (create, get, list, replace, patch, delete, ...) "
            "and outcome (success, client_error, conflict, not_found, unauthorized, ...).",
            ["operation", "outcome"],
            registry=self.registry,
        )

        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures_total",
            "Failed authentications by surface (admin, scim, cm: a CM.com channel's URL "
            "secret) and outcome (refused: a wrong token; throttled: refused unread after "
            "too many wrong ones from one client).",
            ["surface", "outcome"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            f"{PREFIX}_webhooks_total",
            "Provider webhooks by provider (twilio, cm), outcome (accepted, duplicate, "
            "rejected) and reason of a rejection (unknown_channel, signature, malformed, "
            "too_large, ...; empty otherwise).",
            ["provider", "outcome", "reason"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            f"{PREFIX}_outbox_deliveries_total",
            "Outbox delivery attempts by kind (event, message.send, ...) and outcome "
            "(delivered, retried, dead, dropped).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            f"{PREFIX}_outbox_backlog",
            "Outbox rows due now and not yet delivered (waiting for a worker or being "
            "delivered); rows scheduled for later are in outbox_scheduled.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.outbox_oldest_age = Gauge(
            f"{PREFIX}_outbox_oldest_age_seconds",
            "Seconds the oldest due outbox row has waited since it became due (its "
            "scheduled time, or its retry time after a failed attempt), not since it was "
            "written: a refresh written an hour ahead is not late; 0 when none is due.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.outbox_scheduled = Gauge(
            f"{PREFIX}_outbox_scheduled",
            "Outbox rows due later: presence refreshes, and retries waiting out their backoff.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.dead_letters = Gauge(
            f"{PREFIX}_outbox_dead_letters",
            "Outbox rows that exhausted their attempts and wait for a replay.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        # The presence gauges are readings of the shared database, like the outbox's: every
        # worker process takes the same reading every few seconds. Summed, N processes
        # would report N times the truth. "max" or "min" would keep the reading of a worker
        # that died until the server stops, and even their live variants show, after a
        # change, the old reading of whichever process has not read again yet.
        # "mostrecent" shows the latest reading any process took, and leaves out a value
        # no process has set yet.
        self.presence_monitors = Gauge(
            f"{PREFIX}_presence_monitors",
            "Teams presence monitors by status (not_authorized, authorized, subscribed, "
            "needs_update; 0 when none), counted over the accounts that bring Teams "
            "presence in: an account that turned it off runs no upkeep for its monitors.",
            ["status"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.presence_subscription_expiry = Gauge(
            f"{PREFIX}_presence_subscription_expiry_seconds",
            "Seconds until the soonest end of a subscribed monitor's Graph subscription "
            "(negative once it has ended unrenewed); +Inf when no monitor is subscribed.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        if not os.environ.get(MULTIPROCESS_ENV):
            # Until the first reading no subscription is known to end; the default 0 would
            # read as one ending now. In multiprocess mode an unset value is left out of
            # the scrape, and setting one here would stamp it newer than the readings the
            # other workers took.
            self.presence_subscription_expiry.set(math.inf)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type (summed over workers)."""
        directory = os.environ.get(MULTIPROCESS_ENV)
        if not directory:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        drop_dead_workers(Path(directory))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_dead_workers(directory: Path) -> None:
    """Forget the live gauges of worker processes that are gone (their counters stay)."""
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]


def new_metrics_directory() -> Path:
    """A fresh directory for the metric files of this server's workers, after removing
    those that servers which died without cleaning up (SIGKILL, OOM) left behind.

    Its name carries this process's pid, so a later start can tell whether the server
    that made it is still running. Each is owner-only (``mkdtemp``).
    """
    parent = Path(tempfile.gettempdir())
    for path in parent.glob(METRICS_DIR_PREFIX + "*"):
        if _stale(path):
            shutil.rmtree(path, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-", dir=parent))


def _stale(path: Path) -> bool:
    """Whether a metrics directory belongs to no running server (and to this user)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    owner = _OWNER.match(path.name)
    if owner is not None:
        pid = int(owner.group(1))
        # This process has made none yet: one named after its pid is an earlier process's.
        return pid == os.getpid() or not _alive(pid)
    # Named by an earlier version, without the server's pid: stale when none of the
    # workers that wrote into it runs, and it is not a server's that is just starting.
    workers = {int(match.group(1)) for f in path.iterdir() if (match := _FILE_PID.search(f.name))}
    quiet = time.time() - info.st_mtime > LEGACY_GRACE_SECONDS
    return quiet and not any(_alive(pid) for pid in workers)


def status_class(status: int) -> str:
    """``2xx``, ``4xx``... a bounded label for a status code."""
    return f"{status // 100}xx"
