"""Delivery of one event to a CloudLink endpoint as a Standard Webhook.

The body is signed with the ``standardwebhooks`` package: ``webhook-id`` is the event's
id, the same on every retry, so the receiver drops a delivery it has already seen;
``webhook-timestamp`` is the time of this attempt, as receivers reject old ones.

The status alone decides a delivery. Of the answer's body at most ``ANSWER_LIMIT`` is
read, and a body still arriving at the call's deadline is cut there: an endpoint that
answers 200 and then streams for ever has still accepted the event.
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from gateway.clients.destinations import UnsafeDestination, check_destination
from gateway.clients.http import KIB, HttpClient, ProviderError, request

SECRET_PREFIX = "whsec_"  # noqa: S105  (the prefix, not a secret)
# Nothing of an endpoint's body is used; reading a short one to its end (an "OK", an
# error object) keeps the connection for the next delivery, and 64 deliveries at once
# then keep at most 1 MiB of answers.
ANSWER_LIMIT = 16 * KIB


class EndpointGone(ProviderError):
    """The endpoint answered 410 Gone: the gateway stops delivering to it."""


def signed_headers(secret: str, message_id: str, body: str, now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
        "content-type": "application/json",
    }


async def deliver_event(
    http: HttpClient,
    *,
    url: str,
    secret: str,
    message_id: str,
    body: str,
    allow_private: bool,
) -> int:
    """POST one signed event; returns the status of a 2xx, raises ``ProviderError`` else."""
    try:
        await check_destination(url, allow_private=allow_private)
    except UnsafeDestination as exc:
        raise ProviderError(f"endpoint refused: {exc}", retryable=True) from exc
    headers = signed_headers(secret, message_id, body, datetime.now(UTC))
    response = await request(
        http,
        "POST",
        url,
        what="delivering to the endpoint",
        content=body,
        headers=headers,
        limit=ANSWER_LIMIT,
        truncate=True,
    )
    if response.status == 410:
        raise EndpointGone("the endpoint answered 410 Gone", retryable=False, status=410)
    if 200 <= response.status < 300:
        return response.status
    raise ProviderError(
        f"the endpoint answered {response.status}",
        retryable=True,
        status=response.status,
    )
