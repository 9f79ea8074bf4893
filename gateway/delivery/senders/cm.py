"""Replies through CM.com's Business Messaging API (WhatsApp, SMS, Messenger alike)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from gateway.accounts.providers import cm_product_token
from gateway.clients.cmcom import CmApi
from gateway.clients.providers import Providers
from gateway.delivery.senders.sender import SendPlan, Sent
from gateway.security import SecretBox
from gateway.settings import Settings


def _strip_prefix(address: str) -> str:
    return address.split(":", 1)[1] if ":" in address else address


@dataclass(frozen=True)
class CmSender:
    """Sends with the account's product token, the message's id as CM.com's reference
    (its delivery reports carry it back). CM.com names bare numbers and the channel apart,
    so the addresses lose their ``whatsapp:`` prefix; it gives no status of its own, and
    an accepted message is ``accepted``."""

    api: CmApi

    @property
    def integration(self) -> str:
        """CM.com."""
        return "CM.com"

    def credentials(self, conn: Connection, secrets: SecretBox, account_id: str) -> str | None:
        """The account's product token."""
        return cm_product_token(conn, secrets, account_id)

    async def send(self, plan: SendPlan, credentials: str) -> Sent:
        """Send the message from the channel's number or page to the contact."""
        accepted = await self.api.send_message(
            credentials,
            from_=_strip_prefix(plan.local_address),
            to=_strip_prefix(plan.contact_address),
            text=plan.text or "",
            channel=plan.channel_type,
            reference=plan.message_id,
        )
        return Sent(accepted.reference, "accepted")

    async def find_sent(self, plan: SendPlan, credentials: str, since: float) -> list[Sent]:
        """Nothing: CM.com's API has no way to read sent messages back. A send whose answer
        never came is repeated; its delivery reports, which carry the reference, may have
        settled it first (a reply that has a status is not sent again)."""
        return []


def sender(providers: Providers, _settings: Settings) -> CmSender:
    """The CM.com sender of one process."""
    return CmSender(providers.cm)
