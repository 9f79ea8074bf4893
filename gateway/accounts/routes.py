"""Admin API of accounts and integrations: parse, call a service function, shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.accounts import models, office365, providers
from gateway.accounts import service as accounts
from gateway.events.service import OPERATOR_API
from gateway.web.auth import require_operator
from gateway.web.bodies import read_model
from gateway.web.openapi import ACCOUNT, API, Header, Operation, Param
from gateway.web.pages import page
from gateway.web.responses import model_response
from gateway.web.routing import TemplateRoute
from gateway.web.state import app_state

Handler = Callable[[Request], Awaitable[Response]]


async def list_accounts(request: Request) -> Response:
    state = require_operator(request)
    return model_response(models.AccountList(items=await accounts.list_accounts(state.db)))


async def create_account(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.AccountCreate)
    return model_response(
        await accounts.create_account(state.db, name=body.name, actor=OPERATOR_API), 201
    )


async def get_account(request: Request) -> Response:
    state = require_operator(request)
    account_id = request.path_params["account_id"]
    return model_response(await accounts.get_account(state.db, account_id=account_id))


async def update_account(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.AccountUpdate)
    account = await accounts.rename_account(
        state.db, account_id=request.path_params["account_id"], name=body.name, actor=OPERATOR_API
    )
    return model_response(account)


async def list_integrations(request: Request) -> Response:
    state = require_operator(request)
    items = await accounts.list_integrations(
        state.db,
        account_id=request.path_params["account_id"],
        public_url=state.settings.public_url,
    )
    return model_response(models.IntegrationList(items=items))


async def add_integration(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.IntegrationAdd)
    item = await accounts.add_integration(
        state.db,
        account_id=request.path_params["account_id"],
        kind=body.kind,
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(item, 201)


async def remove_integration(request: Request) -> Response:
    state = require_operator(request)
    await accounts.remove_integration(
        state.db,
        account_id=request.path_params["account_id"],
        kind=request.path_params["kind"],
        actor=OPERATOR_API,
    )
    return Response(status_code=204)


async def set_twilio(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.TwilioSettings)
    item = await providers.configure_twilio(
        state.db,
        secrets=state.secrets,
        twilio=state.providers.twilio,
        account_id=request.path_params["account_id"],
        body=body,
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(item)


async def set_cm(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.CmSettings)
    item = await providers.configure_cm(
        state.db,
        secrets=state.secrets,
        account_id=request.path_params["account_id"],
        body=body,
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(item)


async def office365_consent(request: Request) -> Response:
    state = require_operator(request)
    consent = await office365.request_consent(
        state.db,
        identity=state.providers.identity,
        settings=state.settings,
        account_id=request.path_params["account_id"],
        actor=OPERATOR_API,
    )
    return model_response(consent, headers={"Cache-Control": "no-store"})


async def office365_enable(request: Request) -> Response:
    state = require_operator(request)
    body = await read_model(request, models.Office365Enable)
    item = await office365.enable_office365(
        state.db,
        account_id=request.path_params["account_id"],
        enabled=body.enabled,
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(item)


async def office365_answer(request: Request) -> Response:
    """GET /oauth/office365: the administrator's browser, back from the consent page."""
    state = app_state(request)
    query = request.query_params
    item = await office365.record_consent(
        state.db,
        state=query.get("state", "")[:200],
        error=query.get("error") or None,
        description=query.get("error_description") or None,
        tenant=query.get("tenant") or None,
        actor=office365.CONSENT_ACTOR,
        public_url=state.settings.public_url,
    )
    if item.status == office365.GRANTED:
        return page(
            "Consent granted",
            "Thank you: CloudLink may now use Microsoft Office 365 for your organization. "
            "You can close this window and tell your CloudLink administrator.",
        )
    return page(
        "Consent not granted",
        f"Microsoft reported: {query.get('error_description') or query.get('error')}. "
        "Tell your CloudLink administrator; a new consent link can be requested.",
    )


async def generate_keys(request: Request) -> Response:
    state = require_operator(request)
    keys = await accounts.generate_scim_keys(
        state.db,
        account_id=request.path_params["account_id"],
        actor=OPERATOR_API,
        public_url=state.settings.public_url,
    )
    return model_response(keys, headers={"Cache-Control": "no-store"})


KIND = Param(
    "kind",
    "An integration CloudLink knows; removing one the account does not have is answered 404.",
    {"type": "string", "enum": sorted(accounts.KINDS)},
)
NO_STORE = Header(
    "Cache-Control",
    "The secret token must not be kept by caches.",
    {"type": "string", "const": "no-store"},
)

OPERATIONS: list[tuple[Operation, Handler]] = [
    (
        Operation("GET", API + "/accounts", "List accounts", response=models.AccountList),
        list_accounts,
    ),
    (
        Operation(
            "POST",
            API + "/accounts",
            "Create an account",
            201,
            models.AccountCreate,
            models.AccountOut,
        ),
        create_account,
    ),
    (Operation("GET", ACCOUNT, "Get an account", response=models.AccountOut), get_account),
    (
        Operation(
            "PATCH",
            ACCOUNT,
            "Rename an account",
            body=models.AccountUpdate,
            response=models.AccountOut,
        ),
        update_account,
    ),
    (
        Operation(
            "GET",
            ACCOUNT + "/integrations",
            "List an account's integrations",
            response=models.IntegrationList,
        ),
        list_integrations,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/integrations",
            "Add an integration",
            201,
            models.IntegrationAdd,
            models.IntegrationOut,
            errors=(409,),
        ),
        add_integration,
    ),
    (
        Operation(
            "DELETE",
            ACCOUNT + "/integrations/{kind}",
            "Remove an integration (Azure AD Sync: revokes the SCIM token)",
            204,
            path_params=(KIND,),
            errors=(409,),
        ),
        remove_integration,
    ),
    (
        Operation(
            "PUT",
            ACCOUNT + "/integrations/twilio/settings",
            "Configure Twilio (the SID and token are checked with Twilio first)",
            body=models.TwilioSettings,
            response=models.IntegrationOut,
            errors=(422,),
        ),
        set_twilio,
    ),
    (
        Operation(
            "PUT",
            ACCOUNT + "/integrations/cmcom/settings",
            "Configure CM.com",
            body=models.CmSettings,
            response=models.IntegrationOut,
        ),
        set_cm,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/integrations/office365/consent",
            "Request Office 365 admin consent (a new link; earlier ones stop working)",
            response=models.ConsentOut,
            headers=(NO_STORE,),
            errors=(409,),
        ),
        office365_consent,
    ),
    (
        Operation(
            "PUT",
            ACCOUNT + "/integrations/office365/enabled",
            "Enable or disable Office 365 (after consent was granted or not detectable)",
            body=models.Office365Enable,
            response=models.IntegrationOut,
            errors=(409,),
        ),
        office365_enable,
    ),
    (
        Operation(
            "POST",
            ACCOUNT + "/integrations/azure_ad_sync/keys",
            "Generate SCIM keys (the previous token stops working)",
            response=models.ScimKeysOut,
            headers=(NO_STORE,),
        ),
        generate_keys,
    ),
]

# The administrator's browser comes back here: no operator token, the state is the proof.
BROWSER_ROUTES = [
    TemplateRoute(office365.CONSENT_PATH, office365_answer, methods=["GET"]),
]
