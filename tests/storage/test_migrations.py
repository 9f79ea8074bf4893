"""The one migration chain runs up and down on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from alembic import command
from sqlalchemy import inspect

from storage.engine import Database, make_engine
from storage.migrate import alembic_config, current_revision, packaged_head, upgrade
from tests.conftest import ADMIN_TOKEN, BACKENDS, SECRET_KEY, postgres_of
from tests.support.databases import backend_database
from tests.support.server import server_env, serving_together

TABLES = {
    "accounts",
    "integrations",
    "scim_credentials",
    "scim_users",
    "scim_user_values",
    "scim_claims",
    "events",
}


def test_chain_upgrades_downgrades_and_upgrades_again(db: Database) -> None:
    """head -> base -> head leaves the full schema; upgrade is idempotent."""
    assert current_revision(db.engine) == packaged_head()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    command.downgrade(alembic_config(db.engine), "base")
    assert current_revision(db.engine) is None
    assert not TABLES & set(inspect(db.engine).get_table_names())
    upgrade(db.engine)
    upgrade(db.engine)
    assert current_revision(db.engine) == packaged_head()


def test_models_and_migrations_agree(db: Database) -> None:
    """Autogenerate finds nothing to add: the tables the code declares are the migrated ones."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, SQLModel.metadata) == []


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing has migrated yet, of each backend."""
    with backend_database(request.param, tmp_path, postgres_of(request), migrated=False) as url:
        yield url


@pytest.mark.slow
def test_replicas_started_together_on_an_empty_database_migrate_once_and_serve(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Three `serve` processes started at the same moment on an empty database all become
    ready (one migrates, the others wait for it), and so does a `migrate` run beside them."""
    envs = [
        server_env(
            tmp_path / f"data-{n}",
            empty_database_url,
            admin_token=ADMIN_TOKEN,
            secret_key=SECRET_KEY,
        )
        for n in range(3)
    ]
    outputs = [tmp_path / f"serve-{n}.log" for n in range(3)]
    beside = subprocess.Popen(
        [sys.executable, "-m", "gateway", "migrate"],
        env=envs[0],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with serving_together(envs, outputs=outputs) as servers:
            for server in servers:
                assert httpx2.get(server.url + "/readyz").status_code == 200
    except RuntimeError:
        pytest.fail("\n".join(path.read_text() for path in outputs))
    _, errors = beside.communicate(timeout=60)
    assert beside.returncode == 0, errors
    engine = make_engine(empty_database_url, pool_size=1)
    assert current_revision(engine) == packaged_head()
    engine.dispose()
