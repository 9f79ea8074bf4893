"""Whether a URL the gateway is asked to call is a public destination.

An endpoint URL comes from an operator, but the gateway would call it from inside the
network it runs in: a URL naming a private, loopback or link-local address (or a name
that resolves to one) could reach internal services. Such URLs are refused unless
``GATEWAY_ALLOW_PRIVATE_ENDPOINTS`` is set. The check runs when an endpoint is added
and again before each delivery, because a name can be pointed elsewhere later.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
from aiohttp.abc import ResolveResult


class UnsafeDestination(Exception):
    """The URL may not be called; the message says why and what would be accepted."""


def _check_shape(url: str, allow_private: bool) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise UnsafeDestination(f"the URL does not parse ({exc})") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise UnsafeDestination("the URL must be absolute, e.g. https://cloudlink.example.com/hook")
    if parts.scheme != "https" and not allow_private:
        raise UnsafeDestination(
            "the URL must use https (http is allowed only with GATEWAY_ALLOW_PRIVATE_ENDPOINTS)"
        )
    if parts.username or parts.password:
        raise UnsafeDestination("the URL must not carry credentials")
    try:
        _ = parts.port
    except ValueError as exc:
        raise UnsafeDestination("the URL's port is not a number in 1..65535") from exc
    return host


NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Other IPv6 forms that carry or translate to an IPv4 address, which a stack or gateway on
# the way may reach: IPv4-compatible (::a.b.c.d, deprecated by RFC 4291), IPv4-translated
# (::ffff:0:a.b.c.d, RFC 2765) and local-use NAT64 (RFC 8215). No public service is
# addressed this way, so none of them is public.
NEVER_PUBLIC = (
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("::ffff:0:0:0/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in NEVER_PUBLIC):
            return False
        # Addresses that carry an IPv4 address reach that address: judge it instead.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


class PublicResolver(aiohttp.abc.AbstractResolver):
    """A resolver that returns public addresses only, for the connection itself.

    Checking a name and then letting the HTTP client resolve it again would let a name
    answer a public address to the check and a private one to the connection (DNS
    rebinding); the connector of endpoint deliveries resolves through this instead.
    """

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host`` that are public; ``OSError`` if there are none."""
        found = await self._inner.resolve(host, port, family)
        kept = [item for item in found if _public(item["host"])]
        if not kept:
            raise OSError(f"{host} resolves to no public address")
        return kept

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Raise ``UnsafeDestination`` unless ``url`` may be called now."""
    host = _check_shape(url, allow_private)
    if allow_private:
        return
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise UnsafeDestination(f"the host {host[:64]!r} does not resolve") from exc
        addresses = [str(info[4][0]) for info in infos]
    private = [address for address in addresses if not _public(address)]
    if private or not addresses:
        raise UnsafeDestination(
            f"the host {host!r} resolves to a private, loopback or reserved address "
            f"({', '.join(private) or 'none'}); set GATEWAY_ALLOW_PRIVATE_ENDPOINTS=true to "
            "allow an on-premises CloudLink"
        )
