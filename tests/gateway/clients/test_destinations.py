"""Endpoint URLs: https to public addresses only, unless private endpoints are allowed."""

from __future__ import annotations

import pytest

from gateway.clients.destinations import PublicResolver, UnsafeDestination, check_destination
from tests.support.sync import run


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10:8443/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://localhost/hook",
        "https://0.0.0.0/hook",
        "https://[64:ff9b::a00:1]/hook",
        "https://[2002:7f00:1::]/hook",
        "https://[::127.0.0.1]/hook",
        "https://[::10.0.0.1]/hook",
        "https://[::8.8.8.8]/hook",
        "https://[::ffff:0:a9fe:a9fe]/hook",
        "https://[64:ff9b:1::a9fe:a9fe]/hook",
    ],
)
def test_private_and_loopback_destinations_are_refused(url: str) -> None:
    """Literal private addresses and names that resolve to one are refused."""
    with pytest.raises(UnsafeDestination, match="private"):
        run(check_destination(url, allow_private=False))


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/hook", "ftp://8.8.8.8/x", "https:///x", "https://u:p@8.8.8.8/"]
)
def test_plain_http_and_odd_urls_are_refused(url: str) -> None:
    """http, other schemes, missing hosts and embedded credentials are refused."""
    with pytest.raises(UnsafeDestination):
        run(check_destination(url, allow_private=False))


def test_a_public_address_is_accepted() -> None:
    """https to a global address passes without a lookup."""
    run(check_destination("https://8.8.8.8/hook", allow_private=False))


def test_allowing_private_endpoints_accepts_loopback_http() -> None:
    """An on-premises CloudLink (or a test receiver) on http and loopback is allowed."""
    run(check_destination("http://127.0.0.1:9000/events", allow_private=True))


def test_the_delivery_resolver_keeps_public_addresses_only() -> None:
    """The connection resolves through a resolver that drops private addresses, so a name
    cannot answer the check with one address and the connection with another."""

    async def scenario() -> None:
        resolver = PublicResolver()
        try:
            with pytest.raises(OSError, match="no public address"):
                await resolver.resolve("localhost", 443)
        finally:
            await resolver.close()

    run(scenario())
