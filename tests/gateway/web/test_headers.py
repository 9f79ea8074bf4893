"""Every answer's security headers: pages not framed or sniffed, admin answers not stored."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient


@pytest.mark.parametrize(
    "path",
    [
        "/oauth/office365?state=unknown.nonce&admin_consent=True&tenant=t",
        "/oauth/monitor/start?m=unknown",
        "/oauth/monitor?state=unknown&code=c",
        "/oauth/nowhere",
    ],
)
def test_browser_pages_forbid_framing_scripts_sniffing_and_storing(
    client: TestClient, path: str
) -> None:
    """Every HTML answer of /oauth, errors included, carries the strict policy."""
    answer = client.get(path)
    assert answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"


def test_the_graph_validation_echo_is_not_sniffed(client: TestClient) -> None:
    """The echoed validationToken is plain text a browser must not read as HTML."""
    token = "<script>alert(1)</script>"
    answer = client.post("/webhooks/graph/notifications", params={"validationToken": token})
    assert answer.status_code == 200
    assert answer.text == token
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_admin_answers_are_never_stored(client: TestClient, admin_headers: dict[str, str]) -> None:
    """Created, listed and refused alike: Cache-Control no-store on the admin API."""
    created = client.post("/api/v1/accounts", json={"name": "Contoso"}, headers=admin_headers)
    listed = client.get("/api/v1/accounts", headers=admin_headers)
    refused = client.get("/api/v1/accounts")
    for answer in (created, listed, refused):
        assert answer.headers["cache-control"] == "no-store", answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff"
