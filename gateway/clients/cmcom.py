"""CM.com's Business Messaging send API (``/v1.0/message``); nothing about storage.

CM.com can answer HTTP 200 while refusing the message inside: the per-message entry
carries a status and a ``messageErrorCode``. Only an accepted entry is a success.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.clients.http import KIB, HttpClient, ProviderError, request

SEND_PATH = "/v1.0/message"
# The answer to a send of one message: one entry of a few hundred bytes, or an error.
ANSWER_LIMIT = 64 * KIB
# CloudLink's channel types, as CM.com names them in ``allowedChannels``.
CM_CHANNELS = {"whatsapp": "WhatsApp", "sms": "SMS", "messenger": "Facebook Messenger"}


@dataclass(frozen=True)
class CmTemplate:
    """A WhatsApp template as CM.com's send names it: the account's namespace, the
    template's name and language, and the values of its ``{{1}}``, ``{{2}}``... in order."""

    namespace: str
    name: str
    language: str
    parameters: list[str]


@dataclass(frozen=True)
class CmAccepted:
    """CM.com accepted the message: our reference, and the status it gave."""

    reference: str
    status: str


def _payload(
    product_token: str,
    *,
    from_: str,
    to: str,
    text: str,
    channel: str,
    reference: str,
    media: list[dict[str, str]],
    template: CmTemplate | None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from": from_,
        "to": [{"number": to}],
        "body": {"type": "auto", "content": text},
        "allowedChannels": [CM_CHANNELS.get(channel, channel)],
        "reference": reference,
    }
    if template is not None:
        message["richContent"] = {
            "conversation": [
                {
                    "template": {
                        "whatsapp": {
                            "namespace": template.namespace,
                            "element_name": template.name,
                            "language": {"policy": "deterministic", "code": template.language},
                            "components": [
                                {
                                    "type": "body",
                                    "parameters": [
                                        {"type": "text", "text": value}
                                        for value in template.parameters
                                    ],
                                }
                            ],
                        }
                    }
                }
            ]
        }
    elif media:
        message["richContent"] = {
            "conversation": [
                {"media": {"mediaName": m.get("title", ""), "mediaUri": m["url"]}} for m in media
            ]
        }
    return {"messages": {"authentication": {"producttoken": product_token}, "msg": [message]}}


def _refusal(body: Any, status: int) -> ProviderError:
    details = body.get("details") if isinstance(body, dict) else None
    code = body.get("errorCode") if isinstance(body, dict) else None
    return ProviderError(
        f"sending via CM.com: HTTP {status}: {details or 'refused'}",
        retryable=False,
        status=status,
        code=str(code) if code is not None else None,
    )


class CmApi:
    """CM.com's messaging gateway at ``base_url`` (``GATEWAY_CM_API_URL``)."""

    def __init__(self, http: HttpClient, base_url: str) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + SEND_PATH

    async def send_message(
        self,
        product_token: str,
        *,
        from_: str,
        to: str,
        text: str,
        channel: str,
        reference: str,
        media: list[dict[str, str]] | None = None,
        template: CmTemplate | None = None,
    ) -> CmAccepted:
        """One send attempt (the outbox retries); a refusal inside a 200 is an error too.

        A template goes in ``richContent`` (WhatsApp's template shape), ``text`` being its
        rendered text, which CM.com shows where the template cannot be."""
        response = await request(
            self._http,
            "POST",
            self._url,
            what="sending via CM.com",
            headers={"X-CM-PRODUCTTOKEN": product_token},
            limit=ANSWER_LIMIT,
            json=_payload(
                product_token,
                from_=from_,
                to=to,
                text=text,
                channel=channel,
                reference=reference,
                media=media or [],
                template=template,
            ),
        )
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        entries = body.get("messages") if isinstance(body, dict) else None
        # A message judged on its own (its entry) says more than the request's errorCode
        # (201, "Created 0 message(s)"), also in a 400.
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
            raise _refusal(body, response.status)
        entry = entries[0]
        status = str(entry.get("status", ""))
        error_code = entry.get("messageErrorCode")
        if status.lower() != "accepted" or (error_code not in (None, 0, "0")):
            raise ProviderError(
                f"sending via CM.com: message refused: {entry.get('messageDetails') or status}",
                retryable=False,
                status=response.status,
                code=str(error_code) if error_code is not None else None,
            )
        return CmAccepted(reference=str(entry.get("reference", reference)), status=status)
