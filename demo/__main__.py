"""``make demo``: a WhatsApp message in, a reply out, its status back; WhatsApp's 24-hour
window (free text refused, a template sent, the answer reopening it); then Teams presence
both ways.

Runs the real gateway (``cloudlink-gateway serve``) on the embedded SQLite default in a
temporary data directory, with the fakes the tests use standing in for Twilio's API, a
CloudLink event receiver, and the Microsoft identity platform with Graph. Every step is a
command or a request an operator would make.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from tests.conftest import user_body
from tests.fakes.cloudlink import FakeCloudLink
from tests.fakes.loopback import serve_app
from tests.fakes.microsoft import FakeMicrosoft
from tests.fakes.twilio import FakeTwilio, new_sid, sign_twilio
from tests.support.live import free_port

SID = "AC" + "de" * 16
TOKEN = "demo-twilio-auth-token-0123456789"
BUSINESS = "+14155550100"
CUSTOMER = "+31612345678"
NEW_CUSTOMER = "+31687654321"
TENANT = "6a1d3f0e-8a41-4d7e-9b55-2f1c0c1b7e01"
CLIENT = "3f2b6c1a-5d4e-4f60-8a7b-9c0d1e2f3a4b"
CLIENT_SECRET = "demo~teams~client~secret~0123"
MONITOR = "presence-monitor@contoso.example"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str), flush=True)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def command(env: dict[str, str], *args: str) -> Any:
    print("$ cloudlink-gateway " + " ".join(args), flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        text=True,
        capture_output=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise SystemExit(f"demo: command failed: {result.stderr}")
    print(result.stdout.strip(), flush=True)
    return json.loads(result.stdout) if "--json" in args else None


def main() -> None:
    twilio = FakeTwilio(auto_status=["sent", "delivered"], auto_status_delay=0.5)
    twilio.add_account(SID, TOKEN, friendly_name="Demo")
    twilio.add_number(SID, BUSINESS)
    twilio.add_template(
        SID,
        "order_ready",
        "Hello {{1}}, your order {{2}} is ready. Reply to this message to talk to us.",
        variables={"1": "Ada", "2": "#1234"},
    )
    twilio.add_template(SID, "spring_sale", "Spring sale: {{1}} off!", approval="pending")
    cloudlink = FakeCloudLink()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    admin = secrets.token_hex(16)
    with (
        tempfile.TemporaryDirectory(prefix="cloudlink-demo-") as data,
        FakeMicrosoft() as microsoft,
        serve_app(twilio.app) as twilio_url,
        serve_app(cloudlink.app) as cloudlink_url,
        serve_app(microsoft.app) as microsoft_url,
    ):
        microsoft.add_tenant(TENANT)
        microsoft.add_app(TENANT, CLIENT, CLIENT_SECRET)
        env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(Path(data) / "data"),
            "GATEWAY_PUBLIC_URL": public,
            "GATEWAY_ADMIN_TOKEN": admin,
            "GATEWAY_TWILIO_API_URL": twilio_url,
            "GATEWAY_TWILIO_CONTENT_URL": twilio_url,
            "GATEWAY_ALLOW_PRIVATE_ENDPOINTS": "true",
            "GATEWAY_GRAPH_API_URL": microsoft_url,
            "GATEWAY_LOGIN_URL": microsoft_url,
            "GATEWAY_OUTBOX_POLL_SECONDS": "0.1",
            "GATEWAY_LOG_LEVEL": "WARNING",
            # The demo's server stops when the story ends: nothing routes to it to drain.
            "GATEWAY_DRAIN_SECONDS": "0",
        }
        env.pop("GATEWAY_SECRET_KEYS", None)
        env.pop("GATEWAY_DATABASE_URL", None)
        say(
            f"Fake Twilio API on {twilio_url}, fake CloudLink receiver on {cloudlink_url}, "
            f"fake Microsoft identity platform and Graph on {microsoft_url}"
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx2.Client(
                base_url=public, headers={"Authorization": f"Bearer {admin}"}, timeout=10
            ) as http:
                wait_for(lambda: _ready(http), "the gateway to start")
                account_id = run_story(env, http, twilio, cloudlink, cloudlink_url)
                run_window(env, http, twilio, account_id)
                run_presence(env, http, microsoft, account_id)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _ready(http: httpx2.Client) -> bool:
    try:
        return http.get("/readyz").status_code == 200
    except httpx2.TransportError:
        return False


def run_story(
    env: dict[str, str],
    http: httpx2.Client,
    twilio: FakeTwilio,
    cloudlink: FakeCloudLink,
    cloudlink_url: str,
) -> str:
    say("1. An account, its Twilio integration, a WhatsApp channel and a CloudLink endpoint")
    account = command(env, "account", "create", "--name", "Contoso", "--json")
    account_id = account["id"]
    command(
        env,
        "integration",
        "set-twilio",
        account_id,
        "--name",
        "Contoso Twilio",
        "--account-sid",
        SID,
        "--auth-token",
        TOKEN,
    )
    channel = command(
        env,
        "channel",
        "add",
        account_id,
        "--provider",
        "twilio",
        "--type",
        "whatsapp",
        "--number",
        BUSINESS,
        "--queue",
        "support-queue",
        "--json",
    )
    endpoint = command(
        env, "endpoint", "add", account_id, "--url", cloudlink_url + "/events", "--json"
    )
    cloudlink.set_secret("/events", endpoint["secret"])

    say("2. A customer writes on WhatsApp: Twilio posts a signed webhook to the channel URL")
    params = twilio.inbound_params(
        account_sid=SID,
        from_="whatsapp:" + CUSTOMER,
        to="whatsapp:" + BUSINESS,
        body="Hi! Where is my order #1234?",
        message_sid=new_sid("SM"),
        profile_name="Ada",
    )
    url = channel["webhook_url"]
    answer = httpx2.post(
        url, data=params, headers={"X-Twilio-Signature": sign_twilio(TOKEN, url, params)}
    )
    print(f"POST {url} -> {answer.status_code} {answer.text}")

    base = f"/api/v1/accounts/{account_id}"
    say("3. The account's feed (GET /feed) and what CloudLink received (signed webhooks)")
    feed = http.get(base + "/feed").json()["items"]
    show([{"type": item["type"], "data": item["data"]} for item in feed[-2:]])
    wait_for(lambda: any(e["type"] == "message.received" for e in cloudlink.received), "push")
    print("CloudLink received:", [event["type"] for event in cloudlink.received])

    say("4. An agent replies (POST /conversations/{id}/messages)")
    [conversation] = http.get(base + "/conversations").json()["items"]
    reply = http.post(
        f"{base}/conversations/{conversation['id']}/messages",
        json={"text": "Hello Ada, it ships today!"},
    ).json()
    show(reply)
    wait_for(lambda: bool(twilio.sent), "the reply to reach Twilio")
    sent = twilio.sent[0]
    print(f"Twilio got: To={sent['to']} From={sent['from']} Body={sent['body']!r}")

    say("5. Twilio's status callbacks come back: the reply's delivery status")
    wait_for(
        lambda: http.get(f"{base}/messages/{reply['id']}").json()["status"] == "delivered",
        "the delivered status",
    )
    show(http.get(f"{base}/messages/{reply['id']}").json())
    feed = http.get(base + "/feed").json()["items"]
    print("Feed:", [item["type"] for item in feed])
    say("Messaging done: message in, reply out, status back, every event pushed to CloudLink.")
    return str(account_id)


def _post_inbound(twilio: FakeTwilio, url: str, sender: str, text: str, name: str) -> None:
    params = twilio.inbound_params(
        account_sid=SID,
        from_="whatsapp:" + sender,
        to="whatsapp:" + BUSINESS,
        body=text,
        message_sid=new_sid("SM"),
        profile_name=name,
    )
    answer = httpx2.post(
        url, data=params, headers={"X-Twilio-Signature": sign_twilio(TOKEN, url, params)}
    )
    print(f"POST {url} -> {answer.status_code} {answer.text}")


def run_window(
    env: dict[str, str], http: httpx2.Client, twilio: FakeTwilio, account_id: str
) -> None:
    base = f"/api/v1/accounts/{account_id}"
    [channel] = http.get(base + "/channels").json()["items"]
    say(
        "6. Bo never wrote: WhatsApp's 24-hour window is closed, and free text is refused "
        "at once (POST /conversations)"
    )
    refused = http.post(
        base + "/conversations",
        json={"channel_id": channel["id"], "address": NEW_CUSTOMER, "text": "Your order?"},
    )
    print(f"-> {refused.status_code}")
    show(refused.json())

    say("7. The channel's WhatsApp templates, from Twilio's Content API")
    templates = command(env, "template", "list", account_id, "--channel", channel["id"], "--json")
    command(env, "template", "list", account_id, "--channel", channel["id"])
    [approved] = [t for t in templates if t["approval"] == "approved"]

    say("8. The agent starts the conversation with the approved template")
    sent_before = len(twilio.sent)
    started = command(
        env,
        "conversation",
        "start",
        account_id,
        "--channel",
        channel["id"],
        "--to",
        NEW_CUSTOMER,
        "--template",
        approved["id"],
        "--var",
        "1=Bo",
        "--var",
        "2=#5678",
        "--json",
    )
    wait_for(lambda: len(twilio.sent) > sent_before, "the template to reach Twilio")
    sent = twilio.sent[-1]
    print(
        f"Twilio got: To={sent['to']} ContentSid={sent['content_sid']} "
        f"ContentVariables={sent['content_variables']} -> {sent['body']!r}"
    )
    conversation_path = f"{base}/conversations/{started['conversation_id']}"
    print("window_closes_at:", http.get(conversation_path).json()["window_closes_at"])

    say("9. Bo answers: the window opens for 24 hours, and the agent's free text goes out")
    _post_inbound(twilio, channel["webhook_url"], NEW_CUSTOMER, "Great, I'll come by!", "Bo")
    print("window_closes_at:", http.get(conversation_path).json()["window_closes_at"])
    reply = http.post(conversation_path + "/messages", json={"text": "See you soon, Bo!"})
    print(f"POST {conversation_path}/messages -> {reply.status_code}")
    show(reply.json())
    wait_for(
        lambda: http.get(f"{base}/messages/{reply.json()['id']}").json()["status"] == "delivered",
        "the reply's delivered status",
    )
    say("Window done: refused outside it, a template to open the talk, the answer reopens it.")


def run_presence(
    env: dict[str, str], http: httpx2.Client, microsoft: FakeMicrosoft, account_id: str
) -> None:
    base = f"/api/v1/accounts/{account_id}"
    say("10. Ada is provisioned by Entra (SCIM), and is a Teams user of the tenant")
    keys = command(env, "scim-keys", account_id, "--json")
    body = user_body("ada")
    created = http.post(
        keys["tenant_url"].removeprefix(str(http.base_url).rstrip("/")) + "/Users",
        json=body,
        headers={"Authorization": f"Bearer {keys['secret_token']}"},
    )
    print(f"POST {keys['tenant_url']}/Users -> {created.status_code}")
    email = body["emails"][0]["value"]
    ada = microsoft.add_user(TENANT, email)

    say("11. The account's Microsoft Teams integration (checked with the identity platform)")
    command(
        env,
        "integration",
        "set-teams",
        account_id,
        "--name",
        "Contoso Teams",
        "--tenant-id",
        TENANT,
        "--client-id",
        CLIENT,
        "--client-secret",
        CLIENT_SECRET,
        "--secret-expires",
        "2031-01-01",
        "--presence-to-teams",
        "on",
    )

    say("12. CloudLink → Teams: Ada starts a call in CloudLink")
    answer = http.post(
        base + "/presence", json={"user": email, "availability": "Busy", "activity": "InACall"}
    )
    print(f"POST {base}/presence -> {answer.status_code} {answer.text}")
    wait_for(lambda: microsoft.presence(ada)["availability"] == "Busy", "Teams to show Busy")
    print("Teams shows:", microsoft.presence(ada))

    say("13. Teams → CloudLink: a presence monitor signs in and subscribes")
    microsoft.add_user(TENANT, MONITOR)
    monitor = command(env, "monitor", "add", account_id, "--upn", MONITOR, "--json")
    with httpx2.Client(follow_redirects=True, timeout=10) as browser:
        page = browser.get(monitor["authorize_url"])
    print(f"sign-in at {monitor['authorize_url'].split('?')[0]} -> {page.status_code}")
    wait_for(
        lambda: http.get(base + "/presence/monitors").json()["users_watched"] == 1,
        "the monitor to subscribe",
    )
    command(env, "monitor", "list", account_id)

    say("14. Ada goes Do Not Disturb in Teams: Graph notifies, the feed shows it")
    microsoft.set_teams_presence(ada, "DoNotDisturb", "Presenting")
    wait_for(
        lambda: any(
            e["type"] == "presence.changed" and e["data"]["source"] == "teams"
            for e in http.get(base + "/feed?limit=500").json()["items"]
        ),
        "the Teams change in the feed",
    )
    show(http.get(f"{base}/presence/{email}").json())

    say("15. Verify configuration (the system check)")
    command(env, "presence", "check", account_id)
    say("Done: messaging, and presence both ways.")


if __name__ == "__main__":
    main()
