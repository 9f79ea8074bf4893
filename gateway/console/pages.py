"""Rendering console pages: the template environment, the values every page gets, and the
headers of the console's answers.

Templates are autoescaped (every value from outside is shown as text: userNames, contact
names, message texts, event payloads), and an undefined value is an error rather than an
empty string. Times are written in UTC inside ``<time datetime>``; the console's script
shows them in the browser's time zone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.console import i18n
from gateway.console.sessions import Session
from gateway.web.headers import Headers
from gateway.web.state import AppState

PREFIX = "/admin"

# Scripts and style sheets only from the gateway's own files (no inline script, no eval),
# requests only to itself, and never inside a frame.
CONSOLE_HEADERS: Headers = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)

_ENV = Environment(
    loader=PackageLoader("gateway.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class StaticFile:
    """A file of ``gateway/console/static``, served with a long cache under a versioned URL."""

    body: bytes
    media_type: str
    version: str


_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _static_files() -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in resources.files("gateway.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _TYPES:
            body = entry.read_bytes()
            version = hashlib.sha256(body).hexdigest()[:12]
            files[entry.name] = StaticFile(body, _TYPES[suffix], version)
    return files


STATIC = _static_files()


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={STATIC[name].version}"


def when(value: datetime | None) -> Markup:
    """A time as ``<time>``: UTC text, which the console's script shows in local time."""
    if value is None:
        return Markup("")
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return Markup('<time datetime="{}">{} UTC</time>').format(
        moment.isoformat().replace("+00:00", "Z"), moment.strftime("%Y-%m-%d %H:%M:%S")
    )


def pretty(value: Any) -> str:
    """A payload as indented JSON text (escaped by the template like any value)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def safe_next(raw: str | None) -> str:
    """Where to go after signing in or switching language: a console path, nothing else."""
    target = raw or ""
    if (
        target.startswith(PREFIX + "/")
        and not target.startswith("//")
        and "\\" not in target
        and all(ch.isprintable() and not ch.isspace() for ch in target)
    ):
        return target
    return PREFIX + "/accounts"


@dataclass
class Console:
    """One request to the console: who is signed in, in which language, and its form."""

    request: Request
    state: AppState
    session: Session | None
    lang: str
    form: dict[str, str] = field(default_factory=dict)

    @property
    def _(self) -> i18n.Translate:
        return i18n.translator(self.lang)

    def here(self) -> str:
        query = self.request.url.query
        return self.request.url.path + (f"?{query}" if query else "")

    def render(self, template: str, *, status: int = 200, **values: Any) -> Response:
        other = "fr" if self.lang == "en" else "en"
        page: dict[str, Any] = {
            "prefix": PREFIX,
            "lang": self.lang,
            "other_lang": other,
            "other_lang_name": i18n.LANGUAGES[other],
            "here": self.here(),
            "session": self.session,
            "csrf": self.session.csrf if self.session else None,
            "_": self._,
            "action": lambda name: i18n.action_name(self.lang, name),
            "status": lambda name: i18n.status_name(self.lang, name),
            "when": when,
            "pretty": pretty,
            "epoch": lambda seconds: datetime.fromtimestamp(seconds, UTC),
            "static": static_url,
            "section": None,
            "notice": None,
            "error": None,
        }
        page.update(values)
        html = _ENV.get_template(template).render(page)
        return HTMLResponse(html, status_code=status)
