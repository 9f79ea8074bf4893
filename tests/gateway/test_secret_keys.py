"""Where the encryption keys come from: the environment, else the embedded key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.secret_keys import MissingSecretKeys, key_file, load_secret_keys
from gateway.security import SecretBox
from gateway.settings import Settings


def test_the_embedded_default_creates_an_owner_only_key_file_once(tmp_path: Path) -> None:
    """First use writes a key readable by the owner alone; later uses read the same key."""
    settings = Settings(data_dir=tmp_path / "data")
    first = load_secret_keys(settings)
    path = key_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_secret_keys(settings)
    assert [k.get_secret_value() for k in first] == [k.get_secret_value() for k in again]
    box = SecretBox(first)
    assert SecretBox(again).decrypt(box.encrypt("token")) == "token"
    assert list(path.parent.glob(".secret.key.*")) == []


def test_the_environment_wins_over_the_key_file(tmp_path: Path) -> None:
    """GATEWAY_SECRET_KEYS set: no key file is written."""
    settings = Settings(
        data_dir=tmp_path / "data", secret_keys="tDC1qomeyDzEI3V1fSPZ2gVYQj2bBV6hYMQ_IVBWRYk="
    )
    assert len(load_secret_keys(settings)) == 1
    assert not key_file(settings).exists()


def test_postgresql_without_keys_is_a_clear_error(tmp_path: Path) -> None:
    """Replicas on one PostgreSQL must share the key: none is invented for them."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url="postgresql://gateway@db.example.com/gateway"
    )
    with pytest.raises(MissingSecretKeys, match="GATEWAY_SECRET_KEYS"):
        load_secret_keys(settings)
    assert not key_file(settings).exists()
