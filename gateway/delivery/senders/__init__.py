"""A sender per provider, found by the provider of the reply's channel.

A provider is one module here with its sender (``sender.Sender``) and one line in
``SENDERS``: the send handler needs nothing else to send through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.clients.http import ProviderError
from gateway.clients.providers import Providers
from gateway.delivery.senders import cm, twilio
from gateway.delivery.senders.sender import Sender, SendPlan, Sent
from gateway.settings import Settings

__all__ = ["SENDERS", "SendPlan", "Sender", "Sent", "sender_for", "senders"]

# A channel's provider, and how a process builds its sender.
SENDERS: Mapping[str, Callable[[Providers, Settings], Sender[Any]]] = {
    "twilio": twilio.sender,
    "cm": cm.sender,
}


def senders(providers: Providers, settings: Settings) -> dict[str, Sender[Any]]:
    """Every provider's sender, built once per process over its clients."""
    return {provider: build(providers, settings) for provider, build in SENDERS.items()}


def sender_for(found: Mapping[str, Sender[Any]], provider: str) -> Sender[Any]:
    """The sender of ``provider``; a channel of a provider without one cannot send, and
    trying again would not change that."""
    sender = found.get(provider)
    if sender is None:
        raise ProviderError(f"no sender for the provider {provider!r}", retryable=False)
    return sender
