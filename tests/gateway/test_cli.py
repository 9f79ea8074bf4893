"""The command line, run as a user runs it: a separate process on the same data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.live import free_port


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_PUBLIC_URL": "https://gateway.example.com",
    }


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_account_create_and_scim_keys_print_the_scripted_json(env: dict[str, str]) -> None:
    """`account create --json` and `scim-keys --json` print exactly the documented keys."""
    account = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    assert set(account) == {"id", "name"}
    assert account["name"] == "Acme"
    keys = json_of(cli(env, "scim-keys", account["id"], "--json"))
    assert set(keys) == {"tenant_url", "secret_token"}
    assert keys["tenant_url"] == f"https://gateway.example.com/scim/v2/{account['id']}"
    again = json_of(cli(env, "scim-keys", account["id"], "--json"))
    assert again["secret_token"] != keys["secret_token"]


def test_unknown_account_is_an_error_exit(env: dict[str, str]) -> None:
    """scim-keys for an unknown account exits non-zero with a message."""
    result = cli(env, "scim-keys", "nope", "--json")
    assert result.returncode == 1
    assert "No account" in result.stderr


def test_bad_configuration_exits_2_naming_the_variable(env: dict[str, str]) -> None:
    """A bad GATEWAY_ variable stops the command with its name and the rule."""
    result = cli({**env, "GATEWAY_PUBLIC_URL": "gateway.example.com"}, "migrate")
    assert result.returncode == 2
    assert "GATEWAY_PUBLIC_URL" in result.stderr


def test_cli_works_on_the_data_of_a_running_server(env: dict[str, str]) -> None:
    """While `serve` runs, the CLI creates an account and keys the server honours at once."""
    port = free_port()
    env = {
        **env,
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_ADMIN_TOKEN": "cli-test-token",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx2.Client(timeout=5) as http:
            for _ in range(200):
                try:
                    if http.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                try:
                    server.wait(timeout=0.05)
                    pytest.fail(f"server exited: {server.stderr.read() if server.stderr else ''}")
                except subprocess.TimeoutExpired:
                    pass
            account = json_of(cli(env, "account", "create", "--name", "Live", "--json"))
            keys = json_of(cli(env, "scim-keys", account["id"], "--json"))
            response = http.get(
                keys["tenant_url"] + "/Users",
                headers={"Authorization": f"Bearer {keys['secret_token']}"},
            )
            assert response.status_code == 200
            listed = http.get(
                f"http://127.0.0.1:{port}/api/v1/accounts",
                headers={"Authorization": "Bearer cli-test-token"},
            )
            assert [a["id"] for a in listed.json()["items"]] == [account["id"]]
    finally:
        server.terminate()
        server.wait(timeout=20)
        if server.stderr:
            server.stderr.close()


def test_integration_remove_revokes_keys(env: dict[str, str]) -> None:
    """`integration remove ACCOUNT azure_ad_sync` removes it and lists nothing after."""
    account = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    json_of(cli(env, "scim-keys", account["id"], "--json"))
    assert cli(env, "integration", "remove", account["id"], "azure_ad_sync").returncode == 0
    assert json_of(cli(env, "integration", "list", account["id"], "--json")) == []
