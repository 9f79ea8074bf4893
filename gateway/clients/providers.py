"""The outbound clients of one process, built once by the app's lifespan (or the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clients.cmcom import CmApi
from gateway.clients.http import HttpClient, new_http_client
from gateway.clients.twilio import TwilioApi
from gateway.settings import Settings


@dataclass(frozen=True)
class Providers:
    """One pooled HTTP client and the provider APIs that use it."""

    http: HttpClient
    twilio: TwilioApi
    cm: CmApi

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        """Clients pointed at the configured base URLs (``GATEWAY_*_API_URL``); call it
        inside the event loop that will use them."""
        http = new_http_client(
            settings.outbound_timeout, connections=settings.outbox_concurrency + 8
        )
        return cls(
            http=http,
            twilio=TwilioApi(http, settings.twilio_api_url),
            cm=CmApi(http, settings.cm_api_url),
        )

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.http.close()
