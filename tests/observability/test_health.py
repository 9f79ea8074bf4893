"""/livez answers without the database; /readyz checks the database and its schema."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text
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
    command.downgrade(alembic_config(db.engine), "0004")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "schema_outdated"
    assert client.get("/livez").status_code == 200


def test_readyz_stays_ok_on_a_newer_schema_that_admits_this_code(
    client: TestClient, db: Database
) -> None:
    """A rolling upgrade migrated to a revision this code does not know, which still admits
    it: the replica stays ready. One that does not admit it is 503 ``schema_too_new``."""
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok"}
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE schema_compatibility SET oldest_code = '9999'"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "schema_too_new"
