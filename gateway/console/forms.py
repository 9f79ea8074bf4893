"""Reading a console form: URL-encoded fields, a small body, no NUL characters."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from gateway.nul import NUL_DETAIL
from gateway.web.bodies import read_body
from gateway.web.errors import BadRequest, InvalidValue

# The console's forms hold names, settings and a reply's text: far below this.
MAX_FORM_BYTES = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a form POST, first value of each name."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit=MAX_FORM_BYTES)
    if not body:
        return {}
    if media_type != "application/x-www-form-urlencoded":
        raise BadRequest("Expected a form (application/x-www-form-urlencoded).")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("The form is not valid URL-encoded UTF-8.") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidValue(NUL_DETAIL)
        fields.setdefault(name, value)
    return fields


def filled(form: dict[str, str], *names: str) -> dict[str, str]:
    """The named fields of a form, trimmed, an empty one left out (as a JSON body would
    leave it out), for the admin API's body model to validate."""
    found = {name: form.get(name, "").strip() for name in names}
    return {name: value for name, value in found.items() if value}
