"""CloudLink presence changes are written into Teams through the outbox."""

from __future__ import annotations

from tests.gateway.presence.conftest import CLIENT_ID, USERS, TeamsStack
from tests.support.waiting import eventually


def _change(stack: TeamsStack, email: str, availability: str, activity: str) -> int:
    answer = stack.api(
        "POST",
        "/presence",
        json={"user": email, "availability": availability, "activity": activity},
    )
    return answer.status_code


def _session(stack: TeamsStack, email: str) -> dict[str, object] | None:
    return stack.microsoft.sessions(stack.teams_ids[email]).get(CLIENT_ID)


def test_a_cloudlink_change_reaches_teams_as_a_session(teams_stack: TeamsStack) -> None:
    """Busy / InACall is set with the app's client id as session id, and is in the feed."""
    assert teams_stack.set_teams().status_code == 200
    assert _change(teams_stack, USERS[0], "Busy", "InACall") == 202
    eventually(lambda: _session(teams_stack, USERS[0]) is not None, what="the session")
    session = _session(teams_stack, USERS[0])
    assert session is not None
    assert (session["availability"], session["activity"]) == ("Busy", "InACall")
    events = [e for e in teams_stack.feed() if e["type"] == "presence.changed"]
    assert events[-1]["data"]["source"] == "cloudlink"
    assert events[-1]["data"]["email"] == USERS[0]
    assert events[-1]["data"]["availability"] == "Busy"
    check = teams_stack.api("GET", f"/presence/{USERS[0]}").json()
    assert check["sources"]["cloudlink"]["activity"] == "InACall"
    eventually(
        lambda: (
            (teams_stack.api("GET", f"/presence/{USERS[0]}").json()["written_to_teams"] or {}).get(
                "availability"
            )
            == "Busy"
        ),
        what="the write recorded",
    )


def test_only_accepted_pairs_are_sent(teams_stack: TeamsStack) -> None:
    """DoNotDisturb becomes DoNotDisturb / Presenting, a pair Graph accepts."""
    assert teams_stack.set_teams().status_code == 200
    assert _change(teams_stack, USERS[1], "DoNotDisturb", "DoNotDisturb") == 202
    eventually(lambda: _session(teams_stack, USERS[1]) is not None, what="the session")
    session = _session(teams_stack, USERS[1])
    assert session is not None
    assert (session["availability"], session["activity"]) == ("DoNotDisturb", "Presenting")


def test_offline_clears_the_session(teams_stack: TeamsStack) -> None:
    """Going offline in CloudLink removes the gateway's session from Teams."""
    assert teams_stack.set_teams().status_code == 200
    assert _change(teams_stack, USERS[0], "Available", "Available") == 202
    eventually(lambda: _session(teams_stack, USERS[0]) is not None, what="the session")
    assert _change(teams_stack, USERS[0], "Offline", "OffWork") == 202
    eventually(lambda: _session(teams_stack, USERS[0]) is None, what="the session cleared")


def test_a_repeated_state_is_not_an_event(teams_stack: TeamsStack) -> None:
    """The same state twice answers unchanged and records one event."""
    assert teams_stack.set_teams().status_code == 200
    first = teams_stack.api(
        "POST", "/presence", json={"user": USERS[2], "availability": "Away", "activity": "Away"}
    )
    again = teams_stack.api(
        "POST", "/presence", json={"user": USERS[2], "availability": "Away", "activity": "Away"}
    )
    assert (first.json()["status"], again.json()["status"]) == ("accepted", "unchanged")
    events = [e for e in teams_stack.feed() if e["type"] == "presence.changed"]
    assert len(events) == 1


def test_nothing_is_written_when_the_account_does_not_write_to_teams(
    teams_stack: TeamsStack,
) -> None:
    """With CloudLink → Teams off, the state is kept and Teams is left alone."""
    assert teams_stack.set_teams(presence_to_teams=False).status_code == 200
    assert _change(teams_stack, USERS[0], "Busy", "InACall") == 202
    assert _session(teams_stack, USERS[0]) is None
    assert teams_stack.api("GET", f"/presence/{USERS[0]}").json()["written_to_teams"] is None


def test_unknown_users_and_bad_values_are_refused(teams_stack: TeamsStack) -> None:
    """An email no provisioned user has is a 404; an unknown availability a 400."""
    assert _change(teams_stack, "nobody@contoso.example", "Busy", "InACall") == 404
    assert _change(teams_stack, USERS[0], "Sleeping", "InACall") == 400
    assert teams_stack.api("GET", "/presence/nobody@contoso.example").status_code == 404


def test_throttled_items_are_retried_after_retry_after(teams_stack: TeamsStack) -> None:
    """A per-item 429 in the batch answer is sent again and lands."""
    assert teams_stack.set_teams().status_code == 200
    teams_stack.microsoft.throttle_batch_items(1, retry_after="0.2")
    assert _change(teams_stack, USERS[0], "Busy", "InAConferenceCall") == 202
    eventually(lambda: _session(teams_stack, USERS[0]) is not None, what="the session")
    session = _session(teams_stack, USERS[0])
    assert session is not None
    assert session["activity"] == "InAConferenceCall"
