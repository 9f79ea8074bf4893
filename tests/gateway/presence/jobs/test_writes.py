"""CloudLink presence of many users at once goes into Teams in shared ``$batch`` requests.

Graph's ``$batch`` calls are held in the fake while the users' changes are made, so that
every write is on its way before any batch is answered: they pile up behind the held one
and leave together, as they do when many users change presence within a few
milliseconds.
"""

from __future__ import annotations

from typing import Any

from tests.gateway.presence.conftest import CLIENT_ID, USERS, TeamsStack
from tests.support.waiting import eventually


def _users(stack: TeamsStack, count: int) -> list[str]:
    """The three users of the stack and more, up to ``count``."""
    return [*USERS, *(stack.add_user(n) for n in range(len(USERS) + 1, count + 1))]


def _written(stack: TeamsStack, email: str) -> bool:
    """Whether the gateway recorded the user's write (it does so before calling Graph)."""
    check = stack.api("GET", f"/presence/{email}").json()
    return check["written_to_teams"] is not None


def _change_all_while_batches_wait(stack: TeamsStack, emails: list[str]) -> None:
    """Each user goes Busy / InACall; Graph answers no batch until every write is sent."""
    with stack.microsoft.graph.holding_batches():
        for email in emails:
            answer = stack.api(
                "POST",
                "/presence",
                json={"user": email, "availability": "Busy", "activity": "InACall"},
            )
            assert answer.status_code == 202, answer.text
        eventually(lambda: all(_written(stack, email) for email in emails), what="every write sent")


def _in_teams(stack: TeamsStack, email: str) -> tuple[Any, Any] | None:
    session = stack.microsoft.sessions(stack.teams_ids[email]).get(CLIENT_ID)
    return None if session is None else (session["availability"], session["activity"])


def _write_batches(stack: TeamsStack) -> list[dict[str, Any]]:
    """The batches of presence writes Graph received (directory lookups are GETs)."""
    return [batch for batch in stack.microsoft.graph.batches if batch["methods"] == ["POST"]]


def _dead_letters(stack: TeamsStack) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.api("GET", "/dead-letters").json()["items"]
    return items


def test_writes_of_many_users_share_batches_that_graph_accepts(teams_stack: TeamsStack) -> None:
    """Forty users' writes leave in shared batches, each accepted whole: every user's
    session is in Teams and nothing is a dead letter."""
    assert teams_stack.set_teams().status_code == 200
    emails = _users(teams_stack, 40)
    _change_all_while_batches_wait(teams_stack, emails)
    eventually(
        lambda: all(_in_teams(teams_stack, email) is not None for email in emails),
        what="every user's session in Teams",
    )
    assert {_in_teams(teams_stack, email) for email in emails} == {("Busy", "InACall")}
    batches = _write_batches(teams_stack)
    assert max(batch["size"] for batch in batches) > 1
    assert [batch for batch in batches if batch["status"] != 200] == []
    assert _dead_letters(teams_stack) == []


def test_a_batch_refused_as_a_whole_is_sent_again_item_by_item(teams_stack: TeamsStack) -> None:
    """Graph refuses a shared batch as a whole (400); its writes go again one by one and
    all land, none a dead letter."""
    assert teams_stack.set_teams().status_code == 200
    emails = _users(teams_stack, 8)
    teams_stack.microsoft.graph.refuse_batch(method="POST")
    _change_all_while_batches_wait(teams_stack, emails)
    eventually(
        lambda: all(_in_teams(teams_stack, email) is not None for email in emails),
        what="every user's session in Teams",
    )
    assert {_in_teams(teams_stack, email) for email in emails} == {("Busy", "InACall")}
    refused = [batch for batch in _write_batches(teams_stack) if batch["status"] != 200]
    assert len(refused) == 1
    assert refused[0]["size"] > 1
    assert _dead_letters(teams_stack) == []
