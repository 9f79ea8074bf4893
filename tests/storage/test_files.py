"""The embedded database's files are readable by their owner alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.secret_keys import load_secret_keys
from gateway.settings import Settings
from storage.engine import make_engine


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems start processes with (files 0644, directories 0755)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("usual_umask")
def test_a_new_data_directory_and_database_are_owner_only(tmp_path: Path) -> None:
    """The data directory is 0700; gateway.db, its -wal and -shm and secret.key are 0600."""
    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'gateway.db'}")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        files = [data / "gateway.db", data / "gateway.db-wal", data / "gateway.db-shm"]
        assert all(path.exists() for path in files)
        assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}
    engine.dispose()
    assert _mode(data) == 0o700
    load_secret_keys(Settings(data_dir=data))
    assert _mode(data / "secret.key") == 0o600


@pytest.mark.usefixtures("usual_umask")
def test_a_database_left_readable_by_others_is_narrowed_at_start(tmp_path: Path) -> None:
    """A database an earlier version created 0644 becomes 0600 when the gateway opens it."""
    database = tmp_path / "gateway.db"
    database.touch(mode=0o644)
    assert _mode(database) == 0o644
    make_engine(f"sqlite:///{database}").dispose()
    assert _mode(database) == 0o600
