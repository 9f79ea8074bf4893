"""The senders of replies, one per provider, found by the channel's provider."""

from __future__ import annotations

from typing import get_args

import pytest

from gateway.channels.models import ChannelCreate
from gateway.clients.http import ProviderError
from gateway.delivery.senders import SENDERS, sender_for


def test_every_provider_a_channel_can_have_has_a_sender() -> None:
    """A channel can be created only for a provider that replies can be sent through."""
    providers = get_args(ChannelCreate.model_fields["provider"].annotation)
    assert set(providers) == set(SENDERS)


def test_a_provider_without_a_sender_is_a_final_failure_naming_it() -> None:
    """A reply on a channel of an unknown provider is not retried: no attempt would find
    a sender, and the error says which provider it was."""
    with pytest.raises(ProviderError, match="'telegram'") as refused:
        sender_for({}, "telegram")
    assert refused.value.retryable is False
