"""SMS opt-out: a contact who texted STOP gets nothing more until they text START.

Twilio stops delivering to such a number by itself, and refuses sends to it with error
21610; its inbound webhook says so in ``OptOutType``. The gateway records the contact's
choice per channel, from ``OptOutType`` or from the keywords themselves (CM.com's SMS, and
Twilio without Advanced Opt-Out), tells CloudLink (``contact.opted_out`` /
``contact.opted_in``), and refuses a reply to an opted-out contact at once.
"""

from __future__ import annotations

from typing import Literal

Change = Literal["out", "in"]

# Twilio's default keywords, a message of the word alone (any case, spaces around).
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})


def change_of(
    channel_type: str, text: str | None, opt_out_type: str | None = None
) -> Change | None:
    """What an inbound message says of the contact's opt-out: on SMS only, ``OptOutType``
    when the provider gives it (STOP, START; HELP changes nothing), else its keyword."""
    if channel_type != "sms":
        return None
    if opt_out_type:
        kind = opt_out_type.strip().upper()
        return "out" if kind == "STOP" else "in" if kind == "START" else None
    word = (text or "").strip().upper()
    return "out" if word in OPT_OUT_WORDS else "in" if word in OPT_IN_WORDS else None
