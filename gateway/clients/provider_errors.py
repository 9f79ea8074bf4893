"""Providers' error codes the gateway knows by name.

A failure keeps the provider's own code (``provider_error_code``); where the gateway knows
the case, its ``error_code`` names it in the same words whichever provider said it, so
that an agent's tool reacts to ``window_closed`` or ``opted_out`` rather than to each
provider's numbers.
"""

from __future__ import annotations

# The contact is outside WhatsApp's 24-hour customer service window: Twilio's 63016,
# CM.com's 62 (Meta's 131047).
WINDOW_CLOSED = "window_closed"
# The contact texted STOP and the provider refuses to send to them: Twilio's 21610.
OPTED_OUT = "opted_out"

KNOWN = {
    ("twilio", "63016"): WINDOW_CLOSED,
    ("cm", "62"): WINDOW_CLOSED,
    ("twilio", "21610"): OPTED_OUT,
}


def failure_code(provider: str, code: str | None) -> str | None:
    """``provider``'s error ``code`` in the gateway's words, or as it is."""
    return KNOWN.get((provider, code or ""), code)
