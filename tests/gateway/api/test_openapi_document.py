"""The admin API's document states the input rules the code enforces, right at their edges.

Schemathesis draws values at random and may miss a rule's rare edges (the first day of
year 1 with a positive offset, a name of one ideographic space); these tests send those
edges and compare what the served document says with what the API answers.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from starlette.testclient import TestClient

from gateway.accounts.models import WHITESPACE

ADMITTED_TIMES = (
    "2026-01-31T00:00:00Z",
    "2026-01-31t00:00:00.123456+05:30",
    "2026-01-31",
    "0001-01-01",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T12:00:00-11:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T00:00:00+14:00",
)
BARRED_TIMES = (
    "",
    "yesterday",
    "0000-01-01",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-00:01",
    "2016-12-31T23:59:60Z",
    "2026-01-31T00:00:00." + "0" * 60 + "Z",
)
ADMITTED_NAMES = ("a", " Acme ", "\u3000名\u3000", "\ufeff", "x" * 200)
BARRED_NAMES = ("", " ", "\t\u3000\u2028", "\x1c\x85", "Ac\x00me", "x" * 201)


def document(client: TestClient) -> dict[str, Any]:
    """The document the running app serves."""
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    served: dict[str, Any] = response.json()
    return served


def query_schema(served: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    """The schema of query parameter ``name`` of GET ``path``."""
    [param] = [p for p in served["paths"][path]["get"]["parameters"] if p["name"] == name]
    schema: dict[str, Any] = param["schema"]
    return schema


def validator(schema: dict[str, Any], served: dict[str, Any]) -> Any:
    """A validator of ``schema`` that asserts formats and resolves the document's $refs."""
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": served["components"]}, validate_formats=True
    )


def new_account(client: TestClient, headers: dict[str, str]) -> str:
    """Create an account through the API; its id."""
    response = client.post("/api/v1/accounts", json={"name": "Acme"}, headers=headers)
    assert response.status_code == 201
    account_id: str = response.json()["id"]
    return account_id


@pytest.mark.parametrize("name", ["since", "until"])
def test_date_time_edges_the_document_admits_are_accepted_and_those_it_bars_are_400(
    client: TestClient, admin_headers: dict[str, str], name: str
) -> None:
    """since/until: what the document admits is answered 200, what it bars 400."""
    path = "/api/v1/accounts/{account_id}/events"
    served = document(client)
    schema = validator(query_schema(served, path, name), served)
    url = path.format(account_id=new_account(client, admin_headers))
    for value in ADMITTED_TIMES:
        assert schema.is_valid(value), value
        response = client.get(url, params={name: value}, headers=admin_headers)
        assert response.status_code == 200, (value, response.text)
    for value in BARRED_TIMES:
        assert not schema.is_valid(value), value
        response = client.get(url, params={name: value}, headers=admin_headers)
        assert response.status_code == 400, (value, response.text)
        assert name in response.json()["detail"]


def test_name_edges_the_document_admits_are_accepted_and_those_it_bars_are_400(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Account names: whitespace-only, NUL and over-long names are barred and refused."""
    served = document(client)
    schema = validator({"$ref": "#/components/schemas/AccountCreate"}, served)
    for name in ADMITTED_NAMES:
        assert schema.is_valid({"name": name}), name
        response = client.post("/api/v1/accounts", json={"name": name}, headers=admin_headers)
        assert response.status_code == 201, (name, response.text)
        assert response.json()["name"] == name.strip()
    for name in BARRED_NAMES:
        assert not schema.is_valid({"name": name}), name
        response = client.post("/api/v1/accounts", json={"name": name}, headers=admin_headers)
        assert response.status_code == 400, (name, response.text)


def test_name_pattern_treats_as_whitespace_exactly_what_strip_removes() -> None:
    """The pattern's whitespace is str.isspace(), which str.strip() uses to trim names."""
    assert "".join(c for c in map(chr, range(0x110000)) if c.isspace()) == WHITESPACE


def test_integration_kinds_the_document_offers_are_the_ones_the_api_takes(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Adding: every offered kind is accepted, an unknown kind is refused with 400."""
    served = document(client)
    offered = served["components"]["schemas"]["IntegrationAdd"]["properties"]["kind"]["enum"]
    base = f"/api/v1/accounts/{new_account(client, admin_headers)}/integrations"
    for kind in offered:
        response = client.post(base, json={"kind": kind}, headers=admin_headers)
        assert response.status_code == 201, (kind, response.text)
    refused = client.post(base, json={"kind": "fax"}, headers=admin_headers)
    assert refused.status_code == 400
    assert "Unknown integration" in refused.json()["detail"]
