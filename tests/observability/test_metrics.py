"""/metrics: request counts by route template and status class, durations, SCIM outcomes;
the directory of the workers' metric files."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from observability.metrics import (
    METRICS_DIR_PREFIX,
    MULTIPROCESS_ENV,
    Metrics,
    new_metrics_directory,
)
from tests.conftest import Tenant, user_body


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def test_requests_are_counted_by_route_template_never_by_id(tenant: Tenant) -> None:
    """Labels carry the route template and status class; no account or user id leaks."""
    created = tenant.post("/Users", user_body(1)).json()
    tenant.get(f"/Users/{created['id']}")
    tenant.get("/Users/missing")
    text = tenant.client.get("/metrics").text
    route = "/scim/v2/{account_id}/Users/{user_id}"
    assert (
        sample(
            text,
            "cloudlink_gateway_http_requests_total",
            route=route,
            method="GET",
            status_class="2xx",
        )
        == 1
    )
    assert (
        sample(
            text,
            "cloudlink_gateway_http_requests_total",
            route=route,
            method="GET",
            status_class="4xx",
        )
        == 1
    )
    assert (
        sample(
            text, "cloudlink_gateway_http_request_duration_seconds_count", route=route, method="GET"
        )
        == 2
    )
    assert tenant.account_id not in text
    assert created["id"] not in text
    assert "contoso" not in text


def test_scim_operations_are_counted_by_operation_and_outcome(tenant: Tenant) -> None:
    """Creates that succeed and that conflict land in different outcomes."""
    tenant.post("/Users", user_body(1))
    tenant.post("/Users", user_body(1))
    tenant.client.get(tenant.url("/Users"))
    text = tenant.client.get("/metrics").text
    name = "cloudlink_gateway_scim_operations_total"
    assert sample(text, name, operation="create", outcome="success") == 1
    assert sample(text, name, operation="create", outcome="conflict") == 1
    assert sample(text, name, operation="list", outcome="unauthorized") == 1


def test_unmatched_paths_and_invented_methods_share_one_label(client: TestClient) -> None:
    """Random paths and methods do not create new label values."""
    client.get("/no/such/path/123")
    client.request("FROBNICATE", "/livez")
    text = client.get("/metrics").text
    assert (
        sample(text, "cloudlink_gateway_http_requests_total", route="/livez", method="other") == 1
    )
    assert "FROBNICATE" not in text
    assert (
        sample(text, "cloudlink_gateway_http_requests_total", route="unmatched", status_class="4xx")
        == 1
    )
    assert "/no/such/path" not in text


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_metrics_directories_of_killed_servers_are_removed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's directory whose server is gone is removed, a running server's is kept;
    an earlier version's (no pid in its name) goes once none of its workers runs."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = _dead_pid()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            killed = tmp_path / f"{METRICS_DIR_PREFIX}{dead}-abc"
            running = tmp_path / f"{METRICS_DIR_PREFIX}{alive.pid}-def"
            legacy_dead = tmp_path / f"{METRICS_DIR_PREFIX}old1"
            legacy_alive = tmp_path / f"{METRICS_DIR_PREFIX}old2"
            legacy_starting = tmp_path / f"{METRICS_DIR_PREFIX}old3"
            for path in (killed, running, legacy_dead, legacy_alive, legacy_starting):
                path.mkdir()
            (legacy_dead / f"counter_{dead}.db").touch()
            (legacy_alive / f"counter_{alive.pid}.db").touch()
            long_ago = time.time() - 3600
            for path in (legacy_dead, legacy_alive):
                os.utime(path, (long_ago, long_ago))
            made = new_metrics_directory()
            left = {path.name for path in tmp_path.iterdir()}
        finally:
            alive.kill()
    assert left == {made.name, running.name, legacy_alive.name, legacy_starting.name}
    assert made.name.startswith(f"{METRICS_DIR_PREFIX}{os.getpid()}-")


# A worker process that takes a reading of the presence gauges, or ("-") only starts.
_READING = """
import sys
from observability.metrics import Metrics
metrics = Metrics()
if sys.argv[1] != "-":
    metrics.presence_monitors.labels("not_authorized").set(float(sys.argv[1]))
    metrics.presence_subscription_expiry.set(float(sys.argv[2]))
"""


def test_with_several_workers_the_presence_gauges_show_the_latest_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker reads the same database: a scrape shows the latest reading, neither the
    sum nor the largest or smallest of them, and a worker that has only started does not
    hide it."""
    env = {**os.environ, MULTIPROCESS_ENV: str(tmp_path)}
    repo = Path(__file__).resolve().parents[2]
    for argv in (["3", "100"], ["1", "900"], ["-"]):
        subprocess.run(
            [sys.executable, "-c", _READING, *argv], env=env, cwd=repo, check=True, timeout=60
        )
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    text = Metrics().exposition()[0].decode()
    assert sample(text, "cloudlink_gateway_presence_monitors", status="not_authorized") == 1
    assert sample(text, "cloudlink_gateway_presence_subscription_expiry_seconds") == 900


def test_before_the_first_reading_no_subscription_is_known_to_end() -> None:
    """One process: the expiry reads +Inf (not 0, an end now) and no status is counted."""
    text = Metrics().exposition()[0].decode()
    assert sample(text, "cloudlink_gateway_presence_subscription_expiry_seconds") == math.inf
    assert "cloudlink_gateway_presence_monitors{" not in text
