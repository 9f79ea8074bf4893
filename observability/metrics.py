"""Prometheus metrics of one gateway app.

Each app owns its own registry, so tests can build many apps in one process. Labels
come from small fixed sets (route template, method, status class, operation, outcome);
never an id, an email, a token or a URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "cloudlink_gateway"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        self.scim_operations = Counter(
            f"{PREFIX}_scim_operations_total",
            "SCIM operations by operation (create, get, list, replace, patch, delete, ...) "
            "and outcome (success, client_error, conflict, not_found, unauthorized, ...).",
            ["operation", "outcome"],
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def status_class(status: int) -> str:
    """``2xx``, ``4xx``... a bounded label for a status code."""
    return f"{status // 100}xx"
