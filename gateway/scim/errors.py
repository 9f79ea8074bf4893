"""How the SCIM surface writes errors: RFC 7644 §3.12 error documents.

Entra reads ``status``, ``scimType`` and ``detail`` into its provisioning logs and
retries 429 and 503 after ``Retry-After``. Errors scim2-models raises are mapped to
gateway errors by their ``scim_type``.
"""

from __future__ import annotations

from typing import Any

from scim2_models import SCIMException
from starlette.responses import Response

from gateway.web.errors import (
    BadRequest,
    Conflict,
    GatewayError,
    InvalidFilter,
    InvalidSyntax,
    InvalidValue,
    NotImplementedFeature,
    Uniqueness,
)
from gateway.web.responses import ErrorReport, json_response

SCIM_MEDIA_TYPE = "application/scim+json"
SCIM_ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimErrors:
    """The SCIM error document, as ``application/scim+json``."""

    def render(self, error: ErrorReport) -> Response:
        """A SCIM error response."""
        body: dict[str, Any] = {
            "schemas": [SCIM_ERROR_SCHEMA],
            "status": str(error.status),
            "detail": error.detail,
        }
        if error.scim_type:
            body["scimType"] = error.scim_type
        return json_response(body, error.status, media_type=SCIM_MEDIA_TYPE, headers=error.headers)


SCIM_ERRORS = ScimErrors()

# scim2-models' scimType values -> the gateway error that answers them.
_BY_SCIM_TYPE: dict[str, type[GatewayError]] = {
    "invalidValue": InvalidValue,
    "invalidSyntax": InvalidSyntax,
    "invalidFilter": InvalidFilter,
    "invalidPath": InvalidValue,
    "noTarget": InvalidValue,
    "mutability": InvalidValue,
    "tooMany": BadRequest,
    "uniqueness": Uniqueness,
    "invalidVers": BadRequest,
    "sensitive": BadRequest,
}
_BY_STATUS: dict[int, type[GatewayError]] = {409: Conflict, 501: NotImplementedFeature}


def from_scim_exception(exc: SCIMException) -> GatewayError:
    """The gateway error for an error scim2-models raised (by its ``scim_type``)."""
    scim_type = exc.scim_type or None
    cls = _BY_SCIM_TYPE.get(scim_type or "") or _BY_STATUS.get(exc.status, BadRequest)
    error = cls(exc.detail)
    if scim_type and error.scim_type != scim_type:
        # Keep the exact scimType scim2-models chose (e.g. invalidPath, noTarget).
        error.scim_type = scim_type
    return error
