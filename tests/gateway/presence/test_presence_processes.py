"""A gateway process killed while Graph's notifications stream in loses none it acknowledged."""

from __future__ import annotations

import random
import signal
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from storage.engine import make_engine
from storage.tables import PRESENCE_STATES, PRESENCE_USERS
from tests.fakes.microsoft import FakeMicrosoft
from tests.gateway.presence.conftest import TENANT, process_stack, provision
from tests.support.server import serving
from tests.support.waiting import eventually

# Gateway processes started, killed and started again.
pytestmark = pytest.mark.slow

USERS = 300
AVAILABILITIES = [("Busy", "InACall"), ("Away", "Away"), ("DoNotDisturb", "Presenting")]


def _acknowledged_users(microsoft: FakeMicrosoft, url: str) -> set[str]:
    """Users named in notification POSTs the gateway acknowledged."""
    users: set[str] = set()
    for sent in microsoft.notifications_sent:
        if sent["kind"] == "notification" and sent["ok"] and sent["url"].startswith(url):
            body: dict[str, Any] = sent["body"]
            users.update(item["resourceData"]["id"] for item in body["value"])
    return users


def _teams_states(database_url: str) -> dict[str, tuple[str, str]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    PRESENCE_USERS.c.teams_user_id,
                    PRESENCE_STATES.c.availability,
                    PRESENCE_STATES.c.activity,
                )
                .join(PRESENCE_STATES, PRESENCE_STATES.c.user_id == PRESENCE_USERS.c.id)
                .where(PRESENCE_STATES.c.source == "teams")
            ).all()
    finally:
        engine.dispose()
    return {row.teams_user_id: (row.availability, row.activity) for row in rows}


def test_a_killed_gateway_loses_no_acknowledged_notification(
    process_env: dict[str, str], microsoft: tuple[FakeMicrosoft, str], database_url: str
) -> None:
    """Teams changes stream in and the server is SIGKILLed: after a restart, every user whose
    notification was acknowledged has the state Teams shows."""
    microsoft_fake = microsoft[0]
    # Basic notifications: each one leaves a read to do, which must survive the kill.
    env = {**process_env, "GATEWAY_PRESENCE_RESOURCE_DATA": "false"}
    with process_stack(env, microsoft) as stack:
        server = stack.process
        assert server is not None
        provision(stack, count=USERS)
        assert stack.set_teams().status_code == 200
        microsoft_fake.add_user(TENANT, "monitor@contoso.example")
        added = stack.api("POST", "/presence/monitors", json={"upn": "monitor@contoso.example"})
        assert stack.sign_in(added.json()["authorize_url"]).status_code == 200
        eventually(
            lambda: stack.monitors()["users_watched"] == USERS, timeout=60, what="subscribed"
        )
        users = list(stack.teams_ids.values())
        random.shuffle(users)
        stop = threading.Event()

        def change() -> None:
            for index, user in enumerate(users):
                if stop.is_set():
                    return
                microsoft_fake.set_teams_presence(user, *AVAILABILITIES[index % 3])
                time.sleep(0.002)

        changer = threading.Thread(target=change)
        changer.start()
        eventually(
            lambda: len(_acknowledged_users(microsoft_fake, server.url)) >= USERS // 3,
            timeout=60,
            what="a third acknowledged",
        )
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        stop.set()
        changer.join()
        acknowledged = _acknowledged_users(microsoft_fake, server.url)
    assert len(acknowledged) >= USERS // 3
    with serving(env):
        eventually(
            lambda: all(
                _teams_states(database_url).get(user)
                == (
                    microsoft_fake.presence(user)["availability"],
                    microsoft_fake.presence(user)["activity"],
                )
                for user in acknowledged
            ),
            timeout=60,
            what="every acknowledged user's state read back",
        )
