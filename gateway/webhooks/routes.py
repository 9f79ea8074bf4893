"""The webhook surface: provider receivers under /webhooks, errors as plain text."""

from __future__ import annotations

from gateway.channels.models import WEBHOOK_PREFIX
from gateway.web.routing import Surface, TemplateRoute
from gateway.webhooks import cmcom, graph, twilio
from gateway.webhooks.common import PLAIN_TEXT, counted

surface = Surface(
    WEBHOOK_PREFIX,
    [
        TemplateRoute(
            WEBHOOK_PREFIX + "/twilio/{channel_id}",
            counted("twilio", twilio.receive),
            methods=["POST"],
        ),
        TemplateRoute(
            WEBHOOK_PREFIX + "/cm/{channel_id}/{secret}",
            counted("cm", cmcom.receive),
            methods=["POST"],
        ),
        TemplateRoute(
            WEBHOOK_PREFIX + "/graph/notifications",
            counted("graph", graph.notifications),
            methods=["POST"],
        ),
        TemplateRoute(
            WEBHOOK_PREFIX + "/graph/lifecycle",
            counted("graph", graph.lifecycle),
            methods=["POST"],
        ),
    ],
    PLAIN_TEXT,
)
