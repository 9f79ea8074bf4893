"""The outbound clients of one process, built once by the app's lifespan (or the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clients.cmcom import CmApi
from gateway.clients.destinations import PublicResolver
from gateway.clients.graph import GraphApi
from gateway.clients.http import HttpClient, new_http_client
from gateway.clients.identity import IdentityPlatform
from gateway.clients.twilio import TwilioApi
from gateway.settings import Settings


@dataclass(frozen=True)
class Providers:
    """One pooled HTTP client and the provider APIs that use it."""

    http: HttpClient
    twilio: TwilioApi
    cm: CmApi
    identity: IdentityPlatform
    graph: GraphApi
    # CloudLink endpoints: public addresses only, checked at connection time, unless
    # private endpoints are allowed.
    endpoints: HttpClient

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        """Clients pointed at the configured base URLs (``GATEWAY_*_API_URL``); call it
        inside the event loop that will use them."""
        http = new_http_client(
            settings.outbound_timeout, connections=settings.outbox_concurrency + 8
        )
        endpoints = (
            http
            if settings.allow_private_endpoints
            else new_http_client(
                settings.outbound_timeout,
                connections=settings.outbox_concurrency + 8,
                resolver=PublicResolver(),
            )
        )
        return cls(
            http=http,
            twilio=TwilioApi(http, settings.twilio_api_url, settings.twilio_content_url),
            cm=CmApi(http, settings.cm_api_url),
            identity=IdentityPlatform(http, settings.login_url),
            graph=GraphApi(http, settings.graph_api_url),
            endpoints=endpoints,
        )

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.http.close()
        if self.endpoints is not self.http:
            await self.endpoints.close()
