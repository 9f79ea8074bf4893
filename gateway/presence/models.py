"""Presence as the gateway keeps it: Graph's names, per source, and combined.

Availability and activity use Microsoft Graph's vocabulary (``Available``, ``Busy``,
``InACall``, ...) everywhere, in the API, the events and the database, so that nothing is
lost in translation between Teams and CloudLink.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.web.openapi import SPACE_OR_NUL

TEAMS = "teams"
CLOUDLINK = "cloudlink"
PHONE = "phone"
SOURCES = (TEAMS, CLOUDLINK, PHONE)

AVAILABILITIES = (
    "Available",
    "AvailableIdle",
    "Away",
    "BeRightBack",
    "Busy",
    "BusyIdle",
    "DoNotDisturb",
    "Offline",
    "PresenceUnknown",
)
# Which source wins the combined state: the most engaged one. Someone in a call on the
# phone is busy whatever Teams says; someone active anywhere is not away.
RANK = {
    "DoNotDisturb": 7,
    "Busy": 6,
    "BusyIdle": 5,
    "Available": 4,
    "AvailableIdle": 3,
    "BeRightBack": 2,
    "Away": 2,
    "Offline": 1,
    "PresenceUnknown": 0,
}
MAX_ACTIVITY = 60


# A character of an email address: neither @ nor white space nor NUL (see SPACE_OR_NUL).
EMAIL_PART = f"[^@{SPACE_OR_NUL}]"


class PresenceChange(BaseModel):
    """A CloudLink presence change of one user."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(
        min_length=3,
        max_length=320,
        pattern=f"^{EMAIL_PART}+@{EMAIL_PART}+$",
        description="The user's email address, as provisioned.",
    )
    availability: Literal[
        "Available",
        "AvailableIdle",
        "Away",
        "BeRightBack",
        "Busy",
        "BusyIdle",
        "DoNotDisturb",
        "Offline",
    ] = Field(description="Graph's availability names.")
    activity: str = Field(
        min_length=1,
        max_length=MAX_ACTIVITY,
        pattern="^[A-Za-z]+$",
        description="Graph's activity names (Available, InACall, InAConferenceCall, Away, "
        "Presenting, OffWork, ...).",
    )


class Accepted(BaseModel):
    """The change is stored; writing it into Teams follows through the outbox."""

    status: Literal["accepted", "unchanged"]


class SourceState(BaseModel):
    """One source's view of a user's presence."""

    availability: str
    activity: str
    updated_at: datetime


class PresenceCheck(BaseModel):
    """Everything the gateway knows of one user's presence (the console's user check)."""

    email: str
    combined: SourceState | None
    sources: dict[str, SourceState]
    teams_user_id: str | None
    teams_raw: dict[str, Any] | None = Field(description="The last presence Graph returned.")
    written_to_teams: dict[str, Any] | None = Field(
        description="The state last written into Teams, and when."
    )


def rank(availability: str) -> int:
    """How engaged an availability is: the highest-ranked source is the combined state."""
    return RANK.get(availability, 0)


def combine(states: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The combined state of per-source ``(availability, activity)`` pairs."""
    return max(states.values(), key=lambda pair: rank(pair[0]), default=None)


class MonitorAdd(BaseModel):
    """A presence monitor to add: a Teams user account created for it in Azure."""

    model_config = ConfigDict(extra="forbid")

    upn: str = Field(
        min_length=3,
        max_length=320,
        pattern="^[^@\\s\\u0000]+@[^@\\s\\u0000]+$",
        description="The monitor account's user principal name.",
    )


class MonitorOut(BaseModel):
    """A presence monitor (its tokens are never shown)."""

    id: str
    upn: str
    status: str = Field(
        description="not_authorized, authorized, subscribed or needs_update (sign in again)."
    )
    users: int = Field(description="How many users its subscription watches.")
    subscription_expires_at: float | None = Field(
        description="When its subscription ends unless renewed (epoch seconds)."
    )
    last_error: str | None
    authorize_url: str | None = Field(
        default=None,
        description="Sign-in link (valid a week; each visit starts a fresh sign-in); given "
        "when the monitor is added or renewed.",
    )


class MonitorList(BaseModel):
    """The account's monitors, and whether they are enough for its users."""

    items: list[MonitorOut]
    users_monitorable: int = Field(description="Users of the account found in Teams.")
    users_watched: int = Field(description="Users covered by a live subscription.")
    monitors_needed: int = Field(description="Authorized monitors those users need (650 each).")
    monitors_authorized: int
    warning: str | None = Field(description="Set when too few monitors are authorized.")


class CheckItem(BaseModel):
    """One item of the system check."""

    name: str = Field(
        description="token, permissions, secret_expiry, monitors, subscriptions, notification_url"
    )
    status: Literal["ok", "warning", "error"]
    detail: str
    action: str | None = Field(default=None, description="What to do when it does not hold.")


class SystemCheck(BaseModel):
    """The Teams presence configuration, checked item by item."""

    status: Literal["ok", "warning", "error"] = Field(description="The worst item's status.")
    items: list[CheckItem]


class SyncStatus(BaseModel):
    """How far "sync all" has come: monitors (and their users) still to read back."""

    monitors: int
    monitors_pending: int
    users: int
    users_pending: int
    done: bool
    monitors_failed: int = Field(
        default=0,
        description="Monitors whose read-back gave up after its retries (the monitor's "
        "last_error says why); a new sync all tries them again.",
    )
