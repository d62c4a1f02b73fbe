"""The Slack sandbox: FakeSlackApi at the wire for slack_sdk and bolt, signed SlackPerson requests, text rendering."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from bot.blocks.render import DIVIDER, mrkdwn_to_text, render_blocks, render_message, render_thread
from sandbox import ButtonNotFound, FakeSlackApi, Message, SlackPerson

TOKEN = "xoxb-sandbox-token"
SECRET = "sandbox-signing-secret"
CHANNEL = "C0INCIDENT"


@pytest.fixture
def fake() -> Iterator[FakeSlackApi]:
    api = FakeSlackApi(
        token=TOKEN,
        usergroups={"S0APPROVERS": ["U0ANNA", "U0BEN"]},
        users={"U0ANNA": "anna", "U0BEN": "ben"},
        channels={CHANNEL: "incident-42"},
    )
    with api:
        yield api


@pytest.fixture
def client(fake: FakeSlackApi) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.api_url, timeout=5)


def approve_blocks(label: str = "Step F1") -> list[dict[str, Any]]:
    return [
        {"type": "section", "block_id": "step", "text": {"type": "mrkdwn", "text": f"*{label}*"}},
        {
            "type": "actions",
            "block_id": "buttons",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "value": "FO-7:F1",
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Approve"},
                },
                {
                    "type": "button",
                    "action_id": "abort",
                    "value": "FO-7",
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Abort"},
                },
            ],
        },
    ]


# ---- FakeSlackApi through slack_sdk ---------------------------------------------------------------


def test_post_reply_broadcast_and_update_build_the_thread(fake: FakeSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="Failover FO-7 started", blocks=approve_blocks("Card"))
    reply = client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="Step F1", blocks=approve_blocks())
    milestone = client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="F1 done", reply_broadcast=True)
    updated = client.chat_update(channel=CHANNEL, ts=reply["ts"], text="Step F1 approved", blocks=[{"type": "divider"}])

    assert parent["ts"] == "1700000000.000100"
    assert float(parent["ts"]) < float(reply["ts"]) < float(milestone["ts"])
    assert parent["channel"] == CHANNEL and parent["message"]["text"] == "Failover FO-7 started"
    assert updated["ts"] == reply["ts"]

    thread = fake.thread(CHANNEL, parent["ts"])
    assert [m.ts for m in thread] == [parent["ts"], reply["ts"], milestone["ts"]]
    assert thread[1].text == "Step F1 approved"
    assert thread[1].blocks == [{"type": "divider"}]
    assert thread[1].edits == 1 and thread[1].history[0][0] == "Step F1"
    assert [m.ts for m in fake.channel_messages(CHANNEL)] == [parent["ts"], milestone["ts"]]
    assert len(fake.calls("chat.postMessage")) == 3 and len(fake.calls("chat.update")) == 1
    assert fake.calls()[0].params["channel"] == CHANNEL


def test_reply_to_a_reply_lands_in_the_parent_thread(fake: FakeSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="root")
    reply = client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="one")
    nested = client.chat_postMessage(channel=CHANNEL, thread_ts=reply["ts"], text="two")
    assert nested["message"]["thread_ts"] == parent["ts"]
    assert [m.text for m in fake.thread(CHANNEL, parent["ts"])] == ["root", "one", "two"]


def test_errors_slack_would_give(fake: FakeSlackApi, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as unknown_ts:
        client.chat_update(channel=CHANNEL, ts="1600000000.000100", text="x")
    assert unknown_ts.value.response["error"] == "message_not_found"

    with pytest.raises(SlackApiError) as unknown_channel:
        client.chat_postMessage(channel="C0ELSEWHERE", text="x")
    assert unknown_channel.value.response["error"] == "channel_not_found"

    long_button = [
        {
            "type": "actions",
            "elements": [{"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "x" * 76}}],
        }
    ]
    with pytest.raises(SlackApiError) as invalid:
        client.chat_postMessage(channel=CHANNEL, text="x", blocks=long_button)
    assert invalid.value.response["error"] == "invalid_blocks"
    assert fake.channel_messages(CHANNEL) == []


def test_form_encoded_post_with_blocks_as_a_json_string(fake: FakeSlackApi, client: WebClient) -> None:
    # api_call(params=...) sends application/x-www-form-urlencoded, blocks serialised to a string.
    answer = client.api_call(
        "chat.postMessage", params={"channel": CHANNEL, "text": "form", "blocks": json.dumps(approve_blocks())}
    )
    assert answer["ok"] is True
    stored = fake.message(CHANNEL, answer["ts"])
    assert stored.text == "form" and stored.blocks == approve_blocks()


def test_wrong_or_missing_token_is_refused(fake: FakeSlackApi) -> None:
    wrong = WebClient(token="xoxb-wrong", base_url=fake.api_url, timeout=5)
    with pytest.raises(SlackApiError) as refused:
        wrong.chat_postMessage(channel=CHANNEL, text="hello")
    assert refused.value.response["error"] == "invalid_auth"
    anonymous = WebClient(base_url=fake.api_url, timeout=5)
    with pytest.raises(SlackApiError) as missing:
        anonymous.auth_test()
    assert missing.value.response["error"] == "not_authed"
    assert fake.channel_messages(CHANNEL) == []
    assert [c.error for c in fake.calls()] == ["invalid_auth", "not_authed"]


def test_rate_limit_is_honoured_by_the_retry_handler(fake: FakeSlackApi) -> None:
    fake.limit("chat.postMessage", times=1, retry_after=1)
    client = WebClient(
        token=TOKEN, base_url=fake.api_url, timeout=5, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    started = time.monotonic()
    answer = client.chat_postMessage(channel=CHANNEL, text="after the limit")
    elapsed = time.monotonic() - started

    assert answer["ok"] is True
    attempts = fake.calls("chat.postMessage")
    assert [(c.status, c.error) for c in attempts] == [(429, "ratelimited"), (200, None)]
    assert attempts[1].time - attempts[0].time >= 1.0 and elapsed >= 1.0
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["after the limit"]


def test_rate_limit_without_retry_handler_surfaces_429(fake: FakeSlackApi, client: WebClient) -> None:
    fake.limit("chat.update", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        client.chat_update(channel=CHANNEL, ts="1.0", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"


def test_ephemerals_from_post_ephemeral_and_response_url(fake: FakeSlackApi, client: WebClient) -> None:
    answer = client.chat_postEphemeral(channel=CHANNEL, user="U0ANNA", text="only for anna")
    assert answer["message_ts"]
    url = fake.response_url("U0BEN", channel=CHANNEL)
    assert url.startswith(fake.url + "/response_url/")
    webhook = WebhookClient(url, timeout=5)
    assert webhook.send(text="only for ben", response_type="ephemeral").status_code == 200
    assert webhook.send(text="everyone sees this", response_type="in_channel").status_code == 200

    assert [e.text for e in fake.ephemerals("U0ANNA")] == ["only for anna"]
    assert [(e.text, e.via) for e in fake.ephemerals("U0BEN")] == [("only for ben", "response_url")]
    assert len(fake.ephemerals()) == 2
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["everyone sees this"]
    assert "only for ben" in fake.all_text() and "only for anna" in fake.all_text()


def test_response_url_replace_original_and_post_limit(fake: FakeSlackApi, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL, text="Step F1", blocks=approve_blocks())
    webhook = WebhookClient(fake.response_url("U0ANNA", channel=CHANNEL, message_ts=posted["ts"]), timeout=5)
    assert webhook.send(text="Approved by anna", replace_original=True).status_code == 200
    assert fake.message(CHANNEL, posted["ts"]).text == "Approved by anna"
    assert fake.message(CHANNEL, posted["ts"]).blocks == []
    statuses = [webhook.send(text=f"note {n}").status_code for n in range(5)]
    assert statuses == [200, 200, 200, 200, 404]


def test_usergroups_users_channels_permalinks(fake: FakeSlackApi, client: WebClient) -> None:
    assert client.usergroups_users_list(usergroup="S0APPROVERS")["users"] == ["U0ANNA", "U0BEN"]
    with pytest.raises(SlackApiError) as missing:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert missing.value.response["error"] == "no_such_subteam"
    assert client.users_info(user="U0BEN")["user"]["name"] == "ben"
    assert client.conversations_info(channel=CHANNEL)["channel"]["name"] == "incident-42"
    posted = client.chat_postMessage(channel=CHANNEL, text="root")
    link = client.chat_getPermalink(channel=CHANNEL, message_ts=posted["ts"])["permalink"]
    assert link == f"https://sandbox.slack.test/archives/{CHANNEL}/p{posted['ts'].replace('.', '')}"
    assert fake.calls("chat.getPermalink")[0].params["message_ts"] == posted["ts"]


def test_all_text_holds_every_string_posted_but_not_the_token(fake: FakeSlackApi, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL, text="plain", blocks=approve_blocks("hidden in a block"))
    client.chat_update(channel=CHANNEL, ts=posted["ts"], text="later")
    everything = fake.all_text()
    assert "hidden in a block" in everything and "FO-7:F1" in everything and "later" in everything
    assert TOKEN not in everything


# ---- SlackPerson: signatures as Slack makes them ---------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], str]]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
        self.received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[dict[str, str], str]]]]:
    received: list[tuple[dict[str, str], str]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_signatures_valid_stale_and_bad(
    fake: FakeSlackApi, recorder: tuple[str, list[tuple[dict[str, str], str]]]
) -> None:
    url, received = recorder
    anna = SlackPerson("U0ANNA", "anna", bot_url=url, signing_secret=SECRET, slack=fake)
    verifier = SignatureVerifier(SECRET)

    assert anna.command("status").status == 200
    anna.command("status", timestamp=int(time.time()) - 600)
    anna.command("status", bad_signature=True)
    anna.command("status", retry_num=1)

    (valid_h, valid_b), (stale_h, stale_b), (bad_h, bad_b), (retry_h, _) = received
    assert valid_h["Content-Type"] == "application/x-www-form-urlencoded"
    assert verifier.is_valid(valid_b, valid_h["X-Slack-Request-Timestamp"], valid_h["X-Slack-Signature"])
    stale_ts = stale_h["X-Slack-Request-Timestamp"]
    assert not verifier.is_valid(stale_b, stale_ts, stale_h["X-Slack-Signature"])
    # Stale only because of its age: the signature itself matches the body.
    assert verifier.generate_signature(timestamp=stale_ts, body=stale_b) == stale_h["X-Slack-Signature"]
    assert not verifier.is_valid(bad_b, bad_h["X-Slack-Request-Timestamp"], bad_h["X-Slack-Signature"])
    assert (retry_h["X-Slack-Retry-Num"], retry_h["X-Slack-Retry-Reason"]) == ("1", "http_timeout")
    assert "X-Slack-Retry-Num" not in valid_h

    fields = dict(urllib.parse.parse_qsl(valid_b))
    assert fields["command"] == "/failover" and fields["text"] == "status"
    assert fields["user_id"] == "U0ANNA" and fields["channel_id"] == CHANNEL and fields["team_id"] == "T0TEST"
    assert fields["response_url"].startswith(fake.url + "/response_url/")


def test_click_finds_the_button_or_lists_the_ones_present(
    fake: FakeSlackApi, recorder: tuple[str, list[tuple[dict[str, str], str]]]
) -> None:
    url, received = recorder
    ben = SlackPerson("U0BEN", "ben", bot_url=url, signing_secret=SECRET, slack=fake)
    message = Message(CHANNEL, "1700000000.000200", "Step F1", approve_blocks(), thread_ts="1700000000.000100")

    ben.click(message, "approve", "FO-7:F1")
    payload = json.loads(dict(urllib.parse.parse_qsl(received[0][1]))["payload"])
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U0BEN", "username": "ben", "name": "ben", "team_id": "T0TEST"}
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000200",
        "channel_id": CHANNEL,
        "is_ephemeral": False,
        "thread_ts": "1700000000.000100",
    }
    assert payload["message"]["thread_ts"] == "1700000000.000100"
    assert payload["message"]["blocks"] == approve_blocks()
    action = payload["actions"][0]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "approve",
        "buttons",
        "FO-7:F1",
        "button",
    )

    ben.redeliver(retry_num=1)
    assert received[1][1] == received[0][1] and received[1][0]["X-Slack-Retry-Num"] == "1"

    with pytest.raises(ButtonNotFound, match=r"retry.*buttons present: approve \('Approve' value='FO-7:F1'\)"):
        ben.click(message, "retry")
    with pytest.raises(ButtonNotFound, match="abort"):
        ben.click(message, "approve", "FO-9:F1")
    assert len(received) == 2


def test_click_on_an_ephemeral_and_replace_it_through_its_response_url(
    fake: FakeSlackApi, client: WebClient, recorder: tuple[str, list[tuple[dict[str, str], str]]]
) -> None:
    url, received = recorder
    ben = SlackPerson("U0BEN", "ben", bot_url=url, signing_secret=SECRET, slack=fake)
    client.chat_postEphemeral(channel=CHANNEL, user="U0BEN", text="Reveal?", blocks=approve_blocks("Reveal"))
    (offer,) = fake.ephemerals("U0BEN")

    ben.click(offer, "approve")
    payload = json.loads(dict(urllib.parse.parse_qsl(received[0][1]))["payload"])
    assert payload["container"]["is_ephemeral"] is True and "message" not in payload
    assert (
        WebhookClient(payload["response_url"], timeout=5).send(text="OTP shown", replace_original=True).status_code
        == 200
    )
    assert [e.text for e in fake.ephemerals("U0BEN")] == ["OTP shown"]
    assert fake.channel_messages(CHANNEL) == []


def test_injected_failure_answers_once_then_recovers(fake: FakeSlackApi, client: WebClient) -> None:
    fake.fail("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError) as failed:
        client.chat_postMessage(channel=CHANNEL, text="first")
    assert failed.value.response["error"] == "channel_not_found"
    assert client.chat_postMessage(channel=CHANNEL, text="second")["ok"] is True
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["second"]


def test_people_refuse_non_loopback_bots() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SlackPerson("U0X", "x", bot_url="http://10.0.0.1:3000", signing_secret=SECRET)
    with pytest.raises(ValueError, match="loopback"):
        FakeSlackApi(host="0.0.0.0")


# ---- a real bolt App between SlackPerson and FakeSlackApi ------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


@pytest.fixture
def bolt_url(fake: FakeSlackApi) -> Iterator[str]:
    app = App(
        token=TOKEN,
        signing_secret=SECRET,
        client=WebClient(token=TOKEN, base_url=fake.api_url, timeout=5),
        token_verification_enabled=False,
    )

    @app.command("/failover")
    def failover(ack: Any, command: dict[str, Any], say: Any, respond: Any) -> None:
        ack(f"Starting {command['text']}")
        say(text=f"Run for {command['text']}", blocks=approve_blocks(f"Run {command['text']}"))
        respond(f"You started {command['text']}")

    @app.action("approve")
    def approve(ack: Any, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.chat_update(
            channel=body["container"]["channel_id"],
            ts=body["container"]["message_ts"],
            text=f"Approved by <@{body['user']['id']}>",
            blocks=[],
        )

    server = make_server(
        "127.0.0.1", 0, SlackRequestHandler(app), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_bolt_app_answers_a_command_and_a_click(fake: FakeSlackApi, bolt_url: str) -> None:
    anna = SlackPerson("U0ANNA", "anna", bot_url=bolt_url, signing_secret=SECRET, slack=fake)

    answer = anna.command("start site-a")
    assert answer.status == 200 and answer.body == "Starting start site-a"
    assert answer.elapsed_s < 3
    posted = fake.wait_for(lambda: fake.channel_messages(CHANNEL), what="the bot's post")[0]
    assert posted.text == "Run for start site-a"
    ephemeral = fake.wait_for(lambda: fake.ephemerals("U0ANNA"), what="the bot's response_url reply")[0]
    assert ephemeral.text == "You started start site-a"

    clicked = anna.click(posted, "approve")
    assert clicked.status == 200
    fake.wait_for_calls("chat.update", timeout=5)
    assert fake.message(CHANNEL, posted.ts).text == "Approved by <@U0ANNA>"
    assert render_message(fake.message(CHANNEL, posted.ts), {"U0ANNA": "anna"}) == "Approved by @anna"


def test_bolt_refuses_bad_and_stale_signatures(fake: FakeSlackApi, bolt_url: str) -> None:
    mallory = SlackPerson("U0MAL", "mallory", bot_url=bolt_url, signing_secret=SECRET, slack=fake)
    assert mallory.command("start site-a", bad_signature=True).status == 401
    assert mallory.command("start site-a", timestamp=int(time.time()) - 600).status == 401
    impostor = SlackPerson("U0MAL", "mallory", bot_url=bolt_url, signing_secret="not-the-secret", slack=fake)
    assert impostor.command("start site-a").status == 401
    time.sleep(0.2)
    assert fake.calls("chat.postMessage") == [] and fake.ephemerals() == []


# ---- rendering -------------------------------------------------------------------------------------

CARD: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Failover FO-7"}},
    {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "*site-a → site-b* started by <@U0ANNA>\nSee <https://x.test/r|the runbook> &amp; wait",
        },
        "fields": [
            {"type": "mrkdwn", "text": "*Scope*\nall"},
            {"type": "mrkdwn", "text": "*Step*\n2 of 9"},
        ],
    },
    {"type": "divider"},
    {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "waiting on <!subteam^S0APPROVERS|@approvers>"},
            {"type": "plain_text", "text": "4m"},
        ],
    },
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Reveal the OTP"},
        "accessory": {"type": "button", "action_id": "reveal", "text": {"type": "plain_text", "text": "Reveal"}},
    },
    *approve_blocks("F2 set IsSlave")[1:],
    {
        "type": "input",
        "optional": True,
        "label": {"type": "plain_text", "text": "Reason"},
        "element": {"type": "plain_text_input", "placeholder": {"type": "plain_text", "text": "why"}},
    },
    {
        "type": "rich_text",
        "elements": [
            {"type": "rich_text_section", "elements": [{"type": "text", "text": "Targets", "style": {"bold": True}}]},
            {
                "type": "rich_text_list",
                "style": "bullet",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "ss-a1 ok"}]},
                    {"type": "rich_text_section", "elements": [{"type": "user", "user_id": "U0BEN"}]},
                ],
            },
        ],
    },
]


def test_render_blocks_reads_like_slack() -> None:
    names = {"U0ANNA": "anna", "U0BEN": "ben"}
    assert render_blocks(CARD, names) == "\n".join(
        [
            "Failover FO-7",
            "═════════════",
            "*site-a → site-b* started by @anna",
            "See the runbook & wait",
            "Scope: all",
            "Step: 2 of 9",
            DIVIDER,
            "  · waiting on @approvers · 4m",
            "Reveal the OTP  [ Reveal ]",
            "[*Approve*] [!Abort!]",
            "Reason (optional): [why_____]",
            "*Targets*",
            "• ss-a1 ok",
            "• @ben",
        ]
    )
    assert mrkdwn_to_text("<@U0X> <#C1|ops> <!here> <https://a.test>") == "@U0X #ops @here https://a.test"


def test_render_thread_indents_replies_under_their_author() -> None:
    parent = Message(CHANNEL, "1700000000.000100", "card", [CARD[0]], user="U0BOT")
    reply = Message(
        CHANNEL,
        "1700000000.000200",
        "Step F1",
        approve_blocks(),
        user="U0BOT",
        thread_ts=parent.ts,
        history=[("Step F1 (old)", [])],
    )
    note = Message(
        CHANNEL, "1700000000.000300", "F1 *done*", [], user="U0BOT", thread_ts=parent.ts, reply_broadcast=True
    )
    names = {"U0BOT": "failover-bot"}
    assert render_thread([parent, reply, note], names, show_time=False) == "\n".join(
        [
            "failover-bot",
            "Failover FO-7",
            "═════════════",
            "",
            "    ↳ failover-bot (edited)",
            "      *Step F1*",
            "      [*Approve*] [!Abort!]",
            "",
            "    ↳ failover-bot (also sent to the channel)",
            "      F1 *done*",
        ]
    )
    timed = render_thread([Message(CHANNEL, "1700000000.000100", "x", [], posted_at=3723.0)], names)
    assert timed.splitlines()[0] == "failover-bot 01:02:03"
