"""A console client: the app in process, signed in through the sign-in form."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx2
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import ADMIN_TOKEN, PUBLIC_URL

# The messaging suite's live gateway and fakes, for the messaging and endpoint pages.
from tests.gateway.messaging.conftest import fakes, stack, stack_settings  # noqa: F401

# The presence suite's live gateway and fake Microsoft, for the Teams and Office 365 pages.
from tests.gateway.presence.conftest import (  # noqa: F401
    microsoft,
    stack_overrides,
    teams_settings,
    teams_stack,
)

# A value from outside that must be shown as text: a script, and markup that breaks out
# of an attribute.
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF_FIELD.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient | httpx2.Client, token: str = ADMIN_TOKEN) -> str:
    """Sign in through the form; the session's CSRF token."""
    page = client.get("/admin/sign-in")
    assert page.status_code == 200, page.text
    answer = client.post(
        "/admin/sign-in",
        data={"csrf": csrf_of(page.text), "token": token, "next": "/admin/accounts"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    accounts = client.get("/admin/accounts")
    assert accounts.status_code == 200
    return csrf_of(accounts.text)


@pytest.fixture
def console(settings: Settings) -> Iterator[TestClient]:
    """A browser-like client of the app, not signed in yet (cookies kept)."""
    with TestClient(create_app(settings), base_url=PUBLIC_URL, follow_redirects=True) as client:
        yield client
