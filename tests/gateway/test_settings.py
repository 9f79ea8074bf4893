"""Settings: environment names, defaults, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings


def test_environment_names_are_the_documented_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GATEWAY_PUBLIC_URL, _DATA_DIR, _DATABASE_URL, _ADMIN_TOKEN are read."""
    monkeypatch.setenv("GATEWAY_PUBLIC_URL", "https://gw.example.com/")
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgresql://u@db/gateway")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "t0k" * 11)
    monkeypatch.setenv("GATEWAY_SECRET_KEYS", "k1, k2")
    settings = Settings()
    assert settings.public_url == "https://gw.example.com"
    assert settings.data_dir == tmp_path
    assert settings.effective_database_url == "postgresql+psycopg://u@db/gateway"
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "t0k" * 11
    assert [k.get_secret_value() for k in settings.secret_keys] == ["k1", "k2"]


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    """Without a database URL the embedded SQLite file lives in the data directory."""
    settings = Settings(data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve()}/gateway.db"


@pytest.mark.parametrize(
    "overrides",
    [
        {"public_url": "gw.example.com"},
        {"database_url": "mysql://x"},
        {"log_level": "LOUD"},
        {"scim_rate_limit_per_second": -1},
    ],
)
def test_bad_values_are_refused_at_start(overrides: dict[str, object]) -> None:
    """Bad values raise at construction, not on a later request."""
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]


def test_secrets_do_not_appear_in_the_settings_repr() -> None:
    """The admin token is a secret: repr shows a mask."""
    assert "s3cret" not in repr(Settings(admin_token="s3cret" * 6))  # type: ignore[arg-type]
