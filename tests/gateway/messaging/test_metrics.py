"""What Prometheus sees of messaging: webhooks by outcome, deliveries, the outbox."""

from __future__ import annotations

from tests.fakes.twilio import new_sid
from tests.gateway.messaging.conftest import Stack
from tests.support.waiting import eventually


def _metric(stack: Stack, name: str) -> dict[str, float]:
    values = {}
    for line in stack.http.get("/metrics").text.splitlines():
        if line.startswith(name):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def test_webhooks_are_counted_by_provider_and_outcome(stack: Stack) -> None:
    """Accepted, duplicate and rejected webhooks each have their series."""
    sid = new_sid("SM")
    stack.twilio_inbound("one", sid=sid)
    stack.twilio_inbound("one", sid=sid)
    stack.twilio_inbound("one", sign_with="another-token-0123456789")
    found = _metric(stack, "cloudlink_gateway_webhooks_total")
    assert (
        found['cloudlink_gateway_webhooks_total{outcome="accepted",provider="twilio",reason=""}']
        == 1
    )
    assert (
        found['cloudlink_gateway_webhooks_total{outcome="duplicate",provider="twilio",reason=""}']
        == 1
    )
    assert (
        found[
            'cloudlink_gateway_webhooks_total{outcome="rejected",provider="twilio",reason="signature"}'
        ]
        == 1
    )


def test_deliveries_and_the_outbox_are_measured(stack: Stack) -> None:
    """Delivered events count by kind; backlog, oldest age, scheduled rows and dead letters
    are gauges."""
    stack.twilio_inbound("hello")
    eventually(
        lambda: (
            _metric(stack, "cloudlink_gateway_outbox_deliveries_total").get(
                'cloudlink_gateway_outbox_deliveries_total{kind="event",outcome="delivered"}', 0
            )
            >= 2
        ),
        what="deliveries counted",
    )
    text = stack.http.get("/metrics").text
    for gauge in (
        "outbox_backlog",
        "outbox_oldest_age_seconds",
        "outbox_scheduled",
        "outbox_dead_letters",
    ):
        assert f"cloudlink_gateway_{gauge} " in text
