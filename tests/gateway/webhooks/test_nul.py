"""No decoded NUL reaches the database from Graph or the browser callbacks, and no 5xx."""

from __future__ import annotations

import uuid

import pytest
from starlette.testclient import TestClient


def test_a_graph_notification_with_nul_is_answered_without_a_server_error(
    client: TestClient,
) -> None:
    """\\u0000 in an item (its clientState too) is replaced, the item then judged as usual."""
    monitor = str(uuid.uuid4())
    body = {
        "value": [
            {
                "clientState": f"{monitor}.sec\u0000ret",
                "resource": "communications/presences('a\u0000b')",
                "changeType": "updated",
            }
        ]
    }
    for path in ("/webhooks/graph/notifications", "/webhooks/graph/lifecycle"):
        answer = client.post(path, json=body)
        assert answer.status_code == 202, answer.text


@pytest.mark.parametrize(
    "path",
    [
        "/oauth/office365?state=a%00b&admin_consent=True&tenant=t",
        "/oauth/monitor?state=a%00b&code=c",
        "/oauth/monitor/start?m=a%00b",
    ],
)
def test_a_browser_callback_with_nul_is_a_400_page(client: TestClient, path: str) -> None:
    """The identity platform's redirects carry what a browser sent: %00 is refused."""
    answer = client.get(path)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
