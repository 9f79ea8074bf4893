"""Twilio's request signature (``X-Twilio-Signature``), computed the way Twilio does.

base64(HMAC-SHA1(Auth Token, URL + every POST parameter's name and value, sorted by
name)). The URL is the one Twilio called, which behind a proxy is not the one this
server sees: it is rebuilt from ``GATEWAY_PUBLIC_URL`` and the path and query as
received. Blank values and parameters nobody here knows count too: Twilio adds
parameters without notice. Like Twilio's own validator, a URL is accepted with or
without its default port. JSON bodies are signed over the URL only, which then carries
``bodySHA256``, the hex SHA-256 of the body.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit, urlunsplit

DEFAULT_PORTS = {"https": 443, "http": 80}


def compute(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> bytes:
    """The raw HMAC-SHA1 digest Twilio sends base64-encoded.

    Names sorted, and each name's distinct values sorted, as Twilio's validator does:
    sorting the distinct (name, value) pairs gives exactly that order.
    """
    payload = url + "".join(name + value for name, value in sorted(set(params)))
    return hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()


@functools.lru_cache(maxsize=4096)
def _port_variants(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is None:
        with_port = parts._replace(netloc=f"{parts.netloc}:{default}") if default else parts
        return (url, urlunsplit(with_port))
    if parts.port == default:
        return (url, urlunsplit(parts._replace(netloc=host)))
    return (url,)


def matches(
    auth_token: str, url: str, params: list[tuple[str, str]], signature: str | None
) -> bool:
    """Whether ``signature`` is Twilio's for this URL and these parameters (never under an
    empty Auth Token, with which anyone could sign)."""
    if not signature or not auth_token:
        return False
    try:
        presented = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    # The URL as configured first; the port variant only when that does not match (the
    # variants are public knowledge, so stopping early reveals nothing about the token).
    return any(
        hmac.compare_digest(compute(auth_token, candidate, params), presented)
        for candidate in _port_variants(url)
    )


def body_hash_matches(url: str, body: bytes) -> bool:
    """For a JSON body: the URL's ``bodySHA256`` is the body's SHA-256."""
    declared = parse_qs(urlsplit(url).query).get("bodySHA256", [""])[0]
    actual = hashlib.sha256(body).hexdigest()
    return bool(declared) and hmac.compare_digest(declared.lower().encode(), actual.encode())
