"""Replies through CM.com's Business Messaging API (WhatsApp, SMS, Messenger alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from gateway.accounts.providers import cm_product_token
from gateway.chat.templates import Template
from gateway.clients.cmcom import CmApi, CmTemplate
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
            template=_cm_template(plan.template) if plan.template else None,
            media=[{"url": str(m["url"]), "title": str(m.get("title") or "")} for m in plan.media],
        )
        return Sent(accepted.reference, "accepted")

    async def find_sent(self, plan: SendPlan, credentials: str, since: float) -> list[Sent]:
        """Nothing: CM.com's API has no way to read sent messages back. A send whose answer
        never came is repeated; its delivery reports, which carry the reference, may have
        settled it first (a reply that has a status is not sent again)."""
        return []

    async def templates(
        self, credentials: str, registered: list[dict[str, Any]] | None
    ) -> list[Template]:
        """The templates registered on the channel: CM.com's messaging API lists none, so
        its operator registers those its Channels portal shows approved."""
        return [registered_template(item) for item in registered or []]


def registered_template(item: dict[str, Any]) -> Template:
    """A template as stored on a CM.com channel (``channels.templates``)."""
    return Template(
        id=template_id(item["name"], item["language"]),
        name=item["name"],
        language=item["language"],
        variables=tuple((name, "") for name in item.get("variables") or []),
        approval="approved",
        category=item.get("category"),
        body=item.get("body"),
        namespace=item.get("namespace"),
    )


def template_id(name: str, language: str) -> str:
    """A CM.com template's id in the gateway: its name and language (unique per channel)."""
    return f"{name}/{language}"


def _cm_template(stored: dict[str, Any]) -> CmTemplate:
    """The send's template for CM.com: its parameters in the order of their numbers."""
    name, _, language = str(stored["id"]).rpartition("/")
    variables: dict[str, str] = stored.get("variables") or {}
    ordered = sorted(variables, key=lambda key: (not key.isdigit(), key.zfill(8)))
    return CmTemplate(
        namespace=str(stored.get("namespace") or ""),
        name=name,
        language=language,
        parameters=[variables[key] for key in ordered],
    )


def sender(providers: Providers, _settings: Settings) -> CmSender:
    """The CM.com sender of one process."""
    return CmSender(providers.cm)
