"""/livez answers without the database; /readyz checks the database and its schema."""

from __future__ import annotations

from alembic import command
from starlette.testclient import TestClient

from storage.engine import Database
from storage.migrate import alembic_config


def test_livez_and_readyz_are_ok_on_a_migrated_database(client: TestClient) -> None:
    """Both answer 200 when everything is in place."""
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok"}


def test_readyz_is_503_when_the_schema_is_not_the_expected_one(
    client: TestClient, db: Database
) -> None:
    """A database behind the code's schema makes /readyz 503, /livez stays 200."""
    command.downgrade(alembic_config(db.engine), "base")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "schema_outdated"
    assert client.get("/livez").status_code == 200
