"""The one exception hierarchy of the gateway.

Each class carries its HTTP status and, where SCIM defines one, its ``scimType``. The
error format of the surface that was called (``gateway.web.routing.Surface``) writes it:
a SCIM error document on the SCIM surface, a JSON problem on the admin API, whatever a
webhook provider expects on its receiver. Raising anything else from a handler is a bug
and answers 500.
"""

from __future__ import annotations

from collections.abc import Mapping

# A client's value is quoted in an error detail up to this many characters: enough to
# recognise it, never a whole hostile body in a response or a log line.
MAX_SHOWN = 64


def shown(text: str) -> str:
    """A client's value as an error detail quotes it: at most ``MAX_SHOWN`` characters."""
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


class GatewayError(Exception):
    """Base of every error the gateway answers on purpose."""

    status: int = 500
    scim_type: str | None = None
    code: str = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        # Facts a program acts on without reading the detail (the admin API's body has them).
        self.fields = dict(fields or {})


class BadRequest(GatewayError):
    """The request is malformed or breaks a rule; the detail says how to fix it."""

    status = 400
    code = "bad_request"


class InvalidValue(BadRequest):
    """A value is missing, of the wrong type, or not allowed by a CloudLink rule."""

    scim_type = "invalidValue"
    code = "invalid_value"


class InvalidSyntax(BadRequest):
    """The body or a parameter cannot be parsed."""

    scim_type = "invalidSyntax"
    code = "invalid_syntax"


class InvalidFilter(BadRequest):
    """A SCIM filter cannot be parsed or names an attribute the gateway cannot filter on."""

    scim_type = "invalidFilter"
    code = "invalid_filter"


class Unauthorized(GatewayError):
    """Missing or wrong credentials."""

    status = 401
    code = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="cloudlink-gateway"'})


class NotFound(GatewayError):
    """Nothing at this address (or nothing this caller may see)."""

    status = 404
    code = "not_found"


class Conflict(GatewayError):
    """The request clashes with the current state."""

    status = 409
    code = "conflict"


class WindowClosed(Conflict):
    """A free-form message to a contact outside the channel's customer service window."""

    code = "window_closed"


class OptedOut(Conflict):
    """A message to a contact who opted out of the channel (texted STOP)."""

    code = "opted_out"


class TemplateNotApproved(Conflict):
    """The template exists but WhatsApp has not approved it (pending, rejected, paused)."""

    code = "template_not_approved"


class Uniqueness(Conflict):
    """A value that must be unique within the account is held by another user."""

    scim_type = "uniqueness"
    code = "uniqueness"


class UnsupportedMediaType(GatewayError):
    """The body is not JSON."""

    status = 415
    code = "unsupported_media_type"


class RateLimited(GatewayError):
    """Too many requests for this account; retry after the given seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class NotImplementedFeature(GatewayError):
    """A SCIM feature the gateway does not offer (bulk, sort, /Me)."""

    status = 501
    code = "not_implemented"


class PayloadTooLarge(GatewayError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"


class Forbidden(GatewayError):
    """The caller is known but not allowed: a webhook whose signature or secret is wrong."""

    status = 403
    code = "forbidden"


class UpstreamUnavailable(GatewayError):
    """A provider the request needs could not be reached; nothing was changed."""

    status = 503
    code = "upstream_unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Unprocessable(GatewayError):
    """Well-formed, but refused by a rule no schema can state (a name that resolves to a
    private address, a number the provider account does not own, rejected credentials)."""

    status = 422
    code = "unprocessable"


class UnknownTemplate(Unprocessable):
    """No template of that id among the channel's templates."""

    code = "template_unknown"


class TemplateVariables(Unprocessable):
    """The variables given do not fill the template: some missing, empty or not its own."""

    code = "template_variables"
