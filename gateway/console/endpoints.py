"""CloudLink endpoints in the console: add one (its whsec_ secret shown once), enable,
disable, remove after a confirmation; the account's dead letters, and their replay."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import service as accounts
from gateway.console import sessions
from gateway.console.guard import signed_in
from gateway.console.pages import Console
from gateway.console.views import (
    ACCOUNT,
    CONSOLE,
    account_page,
    base,
    confirm_page,
    confirmed,
    redirect,
)
from gateway.delivery import endpoints
from gateway.delivery.models import EndpointCreate
from gateway.outbox.worker import Handler
from gateway.web.bodies import validated
from gateway.web.errors import InvalidValue, NotFound
from gateway.web.routing import TemplateRoute

DEAD_LETTERS_PER_PAGE = 100


async def _endpoints_page(console: Console, account_id: str, **values: object) -> Response:
    account = await accounts.get_account(console.state.db, account_id=account_id)
    items = await endpoints.list_endpoints(console.state.db, account_id=account_id)
    letters = await endpoints.dead_letters(
        console.state.db,
        account_id=account_id,
        limit=DEAD_LETTERS_PER_PAGE,
        before=console.request.query_params.get("before") or None,
    )
    return account_page(
        console,
        "endpoints.html",
        account,
        tab="endpoints",
        endpoints=items,
        letters=letters,
        **values,
    )


@signed_in
async def endpoints_page(request: Request, console: Console) -> Response:
    """The endpoints; once after one was added, its secret (a reload shows it no more)."""
    assert console.session is not None  # signed_in
    created = await sessions.take_reveal(
        console.state.db, console.state.secrets, console.session, "endpoint"
    )
    return await _endpoints_page(console, request.path_params["account_id"], created=created)


@signed_in
async def add_endpoint(request: Request, console: Console) -> Response:
    """The new endpoint's secret is kept, encrypted, for the page the redirect leads to."""
    account_id = request.path_params["account_id"]
    body = validated(EndpointCreate, {"url": console.form.get("url", "").strip()})
    created = await endpoints.add_endpoint(
        console.state.db,
        secrets=console.state.secrets,
        account_id=account_id,
        url=body.url,
        allow_private=console.state.settings.allow_private_endpoints,
        actor=CONSOLE,
    )
    assert console.session is not None  # signed_in
    await sessions.reveal(
        console.state.db,
        console.state.secrets,
        console.session,
        {"kind": "endpoint", "url": created.url, "secret": created.secret},
    )
    return redirect(f"{base(account_id)}/endpoints")


@signed_in
async def change_endpoint(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    endpoint_id = request.path_params["endpoint_id"]
    change = request.path_params["change"]
    db = console.state.db
    if change in ("enable", "disable"):
        await endpoints.set_endpoint_enabled(
            db,
            account_id=account_id,
            endpoint_id=endpoint_id,
            enabled=change == "enable",
            actor=CONSOLE,
        )
        return redirect(f"{base(account_id)}/endpoints", f"endpoint_{change}d")
    if change != "remove":
        raise NotFound(f"No change {change!r}: enable, disable or remove.")
    if not confirmed(console):
        account = await accounts.get_account(db, account_id=account_id)
        found = await endpoints.list_endpoints(db, account_id=account_id)
        endpoint = next((e for e in found if e.id == endpoint_id), None)
        if endpoint is None:
            raise NotFound(f"No endpoint {endpoint_id!r} in this account.")
        _ = console._
        return confirm_page(
            console,
            account,
            tab="endpoints",
            heading=_("Remove this endpoint?"),
            lines=[endpoint.url, _("Events are no longer delivered to it.")],
            action=f"{base(account_id)}/endpoints/{endpoint_id}/remove",
            button=_("Remove"),
        )
    await endpoints.remove_endpoint(
        db, account_id=account_id, endpoint_id=endpoint_id, actor=CONSOLE
    )
    return redirect(f"{base(account_id)}/endpoints", "endpoint_removed")


@signed_in
async def replay(request: Request, console: Console) -> Response:
    account_id = request.path_params["account_id"]
    handlers: Mapping[str, Handler] = request.state.outbox_handlers
    every = console.form.get("all") == "yes"
    ids = [key[3:] for key in console.form if key.startswith("dl-")]
    if not every and not ids:
        raise InvalidValue("Tick the dead letters to replay, or replay them all.")
    await endpoints.replay(
        console.state.db,
        handlers=handlers,
        account_id=account_id,
        ids=ids,
        replay_all=every,
        actor=CONSOLE,
    )
    return redirect(f"{base(account_id)}/endpoints", "replayed")


ROUTES = [
    TemplateRoute(ACCOUNT + "/endpoints", endpoints_page, methods=["GET"]),
    TemplateRoute(ACCOUNT + "/endpoints", add_endpoint, methods=["POST"]),
    TemplateRoute(ACCOUNT + "/endpoints/{endpoint_id}/{change}", change_endpoint, methods=["POST"]),
    TemplateRoute(ACCOUNT + "/dead-letters/replay", replay, methods=["POST"]),
]
