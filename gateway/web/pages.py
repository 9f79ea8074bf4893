"""Pages for a person's browser: where the identity platform sends an administrator back.

Consent and sign-in answers arrive as browser redirects, so their outcome (and their
errors) is a small HTML page that says what happened and what to do next, not JSON.
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse, Response

from gateway.web.responses import ErrorReport

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""


def page(title: str, text: str, status: int = 200) -> Response:
    """A minimal page; both strings are escaped. Its security headers (no framing, no
    script, not stored) are the browser surface's (``gateway.web.headers``)."""
    return HTMLResponse(_PAGE.format(title=escape(title), text=escape(text)), status_code=status)


class HtmlPage:
    """The error format of the browser surface."""

    def render(self, error: ErrorReport) -> Response:
        """The error as a page naming its status."""
        return page(f"{error.status}: {error.code.replace('_', ' ')}", error.detail, error.status)


HTML_PAGE = HtmlPage()
