"""What every console page module shares: the actor of its changes, the redirect after
a change and the notice it leads to, and the frame of an account's pages."""

from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse, Response

from gateway.accounts import service as accounts
from gateway.accounts.models import AccountOut, IntegrationOut
from gateway.console.pages import PREFIX, Console
from gateway.events.service import Actor

CONSOLE = Actor("Operator", "console")
ACCOUNT = PREFIX + "/accounts/{account_id}"

# What a redirect after a change says, by its ``done`` parameter (never free text).
NOTICES = {
    "created": "Account created.",
    "renamed": "Account renamed.",
    "added": "Integration added.",
    "removed": "Integration removed.",
    "signed_out": "Signed out.",
    "saved": "Settings saved.",
    "channel_added": "Channel added.",
    "channels_deleted": "Channel deleted.",
    "reply_queued": "Reply queued.",
    "endpoint_enabled": "Endpoint enabled.",
    "endpoint_disabled": "Endpoint disabled.",
    "endpoint_removed": "Endpoint removed.",
    "replayed": "Dead letters queued again.",
    "monitor_deleted": "Presence monitor deleted.",
    "sync_started": "Sync all started.",
    "enabled": "Office 365 enabled.",
    "disabled": "Office 365 disabled.",
}


def notice(console: Console) -> str | None:
    key = console.request.query_params.get("done")
    return console._(NOTICES[key]) if key in NOTICES else None


def redirect(path: str, done: str | None = None) -> Response:
    """After a change: to the page that shows it (a reload does not repeat it)."""
    return RedirectResponse(path + (f"?done={done}" if done else ""), status_code=303)


def base(account_id: str) -> str:
    return f"{PREFIX}/accounts/{account_id}"


def account_page(
    console: Console, template: str, account: AccountOut, *, tab: str, **values: Any
) -> Response:
    """A page of one account: its heading, its tabs, the notice of a change, and ``values``."""
    values.setdefault("notice", notice(console))
    return console.render(
        template, section="accounts", tab=tab, account=account, base=base(account.id), **values
    )


def confirmed(console: Console) -> bool:
    """Whether a change that asks first was confirmed (a POST of its confirmation form)."""
    return console.request.method == "POST" and console.form.get("confirm") == "yes"


def confirm_page(
    console: Console,
    account: AccountOut,
    *,
    tab: str,
    heading: str,
    lines: list[str],
    action: str,
    button: str,
    danger: bool = True,
) -> Response:
    """The question a change asks before it is made (as the vendor's guide does for a
    deletion): its form posts ``confirm=yes`` to ``action``."""
    return account_page(
        console,
        "confirm.html",
        account,
        tab=tab,
        heading=heading,
        lines=lines,
        action=action,
        button=button,
        danger=danger,
    )


async def integrations(console: Console, account_id: str) -> dict[str, IntegrationOut]:
    """The account's integrations by kind, in one read."""
    items = await accounts.list_integrations(
        console.state.db, account_id=account_id, public_url=console.state.settings.public_url
    )
    return {item.kind: item for item in items}
