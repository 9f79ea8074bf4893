"""Replies through Twilio's Messages API (WhatsApp, SMS, Messenger alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from gateway.accounts.providers import twilio_credentials
from gateway.channels.models import webhook_url
from gateway.chat.templates import Template
from gateway.clients.providers import Providers
from gateway.clients.twilio import ContentTemplate, TwilioApi, TwilioCredentials
from gateway.delivery.senders.sender import SendPlan, Sent
from gateway.security import SecretBox
from gateway.settings import Settings

# Seconds a listed message may seem older than the reply and still be taken for it.
CLOCK_MARGIN = 30.0


@dataclass(frozen=True)
class TwilioSender:
    """Sends with the account's SID and Auth Token. The status callback is the channel's
    webhook URL naming the message, so its reports find the message even before its SID
    is stored; Twilio's first status is kept (``queued`` when it gives none)."""

    api: TwilioApi
    public_url: str

    @property
    def integration(self) -> str:
        """Twilio."""
        return "Twilio"

    def credentials(
        self, conn: Connection, secrets: SecretBox, account_id: str
    ) -> TwilioCredentials | None:
        """The account's Account SID and Auth Token."""
        return twilio_credentials(conn, secrets, account_id)

    async def send(self, plan: SendPlan, credentials: TwilioCredentials) -> Sent:
        """Post the message from the channel's sender to the contact."""
        callback = webhook_url(self.public_url, "twilio", plan.channel_id)
        template = plan.template or {}
        sent = await self.api.send_message(
            credentials,
            to=plan.contact_address,
            from_=plan.local_address,
            body=plan.text,
            media_urls=[str(medium["url"]) for medium in plan.media],
            status_callback=f"{callback}?message={plan.message_id}",
            content_sid=template.get("id"),
            content_variables=template.get("variables"),
        )
        return Sent(sent.sid, sent.status or "queued")

    async def find_sent(
        self, plan: SendPlan, credentials: TwilioCredentials, since: float
    ) -> list[Sent]:
        """Outbound messages with this reply's addresses and text, created since ``since``
        (less ``CLOCK_MARGIN``: Twilio's clock and dates to the second are not ours)."""
        listed = await self.api.recent_messages(
            credentials,
            to=plan.contact_address,
            from_=plan.local_address,
            since=since - CLOCK_MARGIN,
        )
        return [
            Sent(message.sid, message.status or "queued")
            for message in listed
            if message.direction.startswith("outbound") and message.body == (plan.text or "")
        ]

    async def templates(
        self, credentials: TwilioCredentials, registered: list[dict[str, Any]] | None
    ) -> list[Template]:
        """The account's Content templates, with their WhatsApp approval."""
        return [_template(item) for item in await self.api.list_templates(credentials)]


def _template(item: ContentTemplate) -> Template:
    return Template(
        id=item.sid,
        name=item.approval_name or item.friendly_name or item.sid,
        language=item.language,
        variables=tuple(item.variables.items()),
        approval=item.approval_status,
        category=item.category,
        body=item.body,
        rejection_reason=item.rejection_reason,
    )


def sender(providers: Providers, settings: Settings) -> TwilioSender:
    """The Twilio sender of one process."""
    return TwilioSender(providers.twilio, settings.public_url)
