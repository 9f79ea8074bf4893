"""The command line, run as a user runs it: a separate process on the same data directory."""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
import pytest

from tests.support.cli import cli, json_of
from tests.support.server import serving

CLI_TOKEN = "cli-test-token-0123456789abcdefghij"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_PUBLIC_URL": "https://gateway.example.com",
    }


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


def test_without_migrate_on_start_serve_refuses_an_unmigrated_database_saying_what_to_do(
    env: dict[str, str],
) -> None:
    """GATEWAY_MIGRATE_ON_START=false (a separate step migrates): serve and the commands
    exit 2 on a database not migrated yet, naming the command to run; after `migrate`,
    they work."""
    unmigrated = {**env, "GATEWAY_MIGRATE_ON_START": "false"}
    for command in (("serve", "--port", "1"), ("account", "list", "--json")):
        result = cli(unmigrated, *command)
        assert result.returncode == 2, result.stderr
        assert "cloudlink-gateway migrate" in result.stderr
    migrated = cli(unmigrated, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "this version's newest" in migrated.stdout
    assert cli(unmigrated, "account", "list", "--json").returncode == 0


def test_serve_refuses_a_short_admin_token_naming_the_variable(env: dict[str, str]) -> None:
    """`serve` with a guessable operator token exits 2 before binding, naming the variable."""
    result = cli({**env, "GATEWAY_ADMIN_TOKEN": "short-but-set"}, "serve", "--port", "1")
    assert result.returncode == 2
    assert "GATEWAY_ADMIN_TOKEN" in result.stderr
    assert "32 characters" in result.stderr
    assert "short-but-set" not in result.stderr


def test_serve_says_an_empty_admin_token_disables_the_admin_api(
    env: dict[str, str], tmp_path: Path
) -> None:
    """GATEWAY_ADMIN_TOKEN= (an unset variable expanded in an env file) keeps the admin API
    disabled, and the welcome says why."""
    output = tmp_path / "serve.log"
    with serving({**env, "GATEWAY_ADMIN_TOKEN": ""}, output=output) as server:
        response = httpx2.get(
            f"{server.url}/api/v1/accounts", headers={"Authorization": b"Bearer \xa0"}
        )
    assert response.status_code == 401
    assert "GATEWAY_ADMIN_TOKEN is set but empty" in output.read_text()


def test_cli_works_on_the_data_of_a_running_server(env: dict[str, str]) -> None:
    """While `serve` runs, the CLI creates an account and keys the server honours at once."""
    env = {**env, "GATEWAY_ADMIN_TOKEN": CLI_TOKEN}
    with serving(env) as server:
        account = json_of(cli(env, "account", "create", "--name", "Live", "--json"))
        keys = json_of(cli(env, "scim-keys", account["id"], "--json"))
        scim_url = f"{server.url}/scim/v2/{account['id']}/Users"
        response = httpx2.get(scim_url, headers={"Authorization": f"Bearer {keys['secret_token']}"})
        assert response.status_code == 200
        listed = httpx2.get(
            f"{server.url}/api/v1/accounts", headers={"Authorization": f"Bearer {CLI_TOKEN}"}
        )
        assert [a["id"] for a in listed.json()["items"]] == [account["id"]]


def test_serve_builds_tenant_urls_on_the_port_it_binds_and_says_what_to_do_next(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Without GATEWAY_PUBLIC_URL, tenant URLs use the bound port; the welcome says what next."""
    env = {k: v for k, v in env.items() if k != "GATEWAY_PUBLIC_URL"}
    env["GATEWAY_ADMIN_TOKEN"] = CLI_TOKEN
    output = tmp_path / "serve.log"
    with serving(env, output=output) as server:
        admin = {"Authorization": f"Bearer {CLI_TOKEN}"}
        account = httpx2.post(f"{server.url}/api/v1/accounts", json={"name": "P"}, headers=admin)
        keys = httpx2.post(
            f"{server.url}/api/v1/accounts/{account.json()['id']}/integrations/azure_ad_sync/keys",
            headers=admin,
        ).json()
    assert keys["tenant_url"].startswith(server.url + "/scim/v2/")
    welcome = output.read_text()
    assert f"admin API: {server.url}/api/v1" in welcome
    assert "GATEWAY_ADMIN_TOKEN" in welcome
    assert f"GATEWAY_PUBLIC_URL={server.url} cloudlink-gateway scim-keys" in welcome


def test_integration_remove_revokes_keys(env: dict[str, str]) -> None:
    """`integration remove ACCOUNT azure_ad_sync` removes it and lists nothing after."""
    account = json_of(cli(env, "account", "create", "--name", "Acme", "--json"))
    json_of(cli(env, "scim-keys", account["id"], "--json"))
    assert cli(env, "integration", "remove", account["id"], "azure_ad_sync").returncode == 0
    assert json_of(cli(env, "integration", "list", account["id"], "--json")) == []
