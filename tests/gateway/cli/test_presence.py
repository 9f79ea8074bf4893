"""The Microsoft commands scripts rely on, run as a user runs them (a separate process)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.loopback import serve_app
from tests.fakes.microsoft import FakeMicrosoft
from tests.support.cli import cli, json_of

TENANT = "7b0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
CLIENT = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
SECRET = "cli~teams~client~secret~0123"


@pytest.fixture
def microsoft() -> Iterator[tuple[FakeMicrosoft, str]]:
    with FakeMicrosoft() as fake, serve_app(fake.app) as url:
        fake.add_tenant(TENANT)
        fake.add_app(TENANT, CLIENT, SECRET)
        yield fake, url


@pytest.fixture
def env(tmp_path: Path, microsoft: tuple[FakeMicrosoft, str]) -> dict[str, str]:
    values = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_PUBLIC_URL": "https://gateway.example.com",
        "GATEWAY_GRAPH_API_URL": microsoft[1],
        "GATEWAY_LOGIN_URL": microsoft[1],
    }
    values.pop("GATEWAY_SECRET_KEYS", None)
    return values


def _set_teams(env: dict[str, str], account_id: str, *extra: str, secret: str = SECRET) -> Any:
    return cli(
        env,
        "integration",
        "set-teams",
        account_id,
        "--name",
        "Teams",
        "--tenant-id",
        TENANT,
        "--client-id",
        CLIENT,
        "--client-secret",
        secret,
        *extra,
    )


@pytest.mark.slow
def test_set_teams_and_office365_consent_as_scripted(env: dict[str, str]) -> None:
    """set-teams (with expiry and toggle) stores the app; office365-consent --json prints the
    link naming the tenant; integration list shows both, no secret anywhere."""
    account: dict[str, Any] = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    result = _set_teams(
        env, account["id"], "--secret-expires", "2027-01-31", "--presence-to-teams", "on", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    stored = json_of(result)
    assert stored["config"]["presence_to_teams"] is True
    assert stored["config"]["secret_expires"] == "2027-01-31"
    consent = json_of(cli(env, "integration", "office365-consent", account["id"], "--json"))
    url = urlsplit(consent["consent_url"])
    assert url.path == f"/{TENANT}/v2.0/adminconsent"
    assert parse_qs(url.query)["redirect_uri"] == ["https://gateway.example.com/oauth/office365"]
    listed = cli(env, "integration", "list", account["id"], "--json")
    assert listed.returncode == 0, listed.stderr
    kinds = {item["kind"]: item["status"] for item in json_of(listed)}
    assert kinds == {"microsoft_teams": "active", "office365": "consent_pending"}
    assert SECRET not in listed.stdout


def test_set_teams_with_a_refused_secret_exits_1_and_says_why(env: dict[str, str]) -> None:
    """The identity platform's refusal is the error; nothing is stored."""
    account: dict[str, Any] = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    result = _set_teams(env, account["id"], secret="wrong-secret-value-00")
    assert result.returncode == 1
    assert "AADSTS7000215" in result.stderr
    listed = json_of(cli(env, "integration", "list", account["id"], "--json"))
    assert listed == []
