"""`failover-bot serve` in Socket Mode, driven over a loopback websocket with slack_sdk's own client (finding 15).

The Slack stand-in answers ``apps.connections.open`` (only with the app-level token) with the
``ws://127.0.0.1`` URL of a websocket endpoint; that endpoint delivers slash-command and interaction
envelopes to the real ``serve`` process and checks that each is acknowledged within Slack's 3 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import load_config
from bot.runs.machine import StepState
from bot.runs.service import RunService
from bot.store.db import Store
from sandbox.rehearsal import BOT_TOKEN
from sandbox.slack_api import FakeSlackApi
from tests.support.paths import ROOT
from tests.support.platform import free_port, running_platform, write_config
from tests.support.serve_process import Served, _bot_env
from tests.support.socket_mode import ACK_DEADLINE_S, SocketModeEndpoint, SocketPerson

APP_TOKEN = "xapp-1-A0FAILOVER-1-sandbox-app-level-token"
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
FAILOVER_ACCOUNT_CHANGES = [("as-b", "service.stop"), ("as-b", "file.replace")]


def test_serve_in_socket_mode_acknowledges_envelopes_and_runs_a_failover(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "cfg", slack={"post_interval_s": 0})
    config = load_config(config_path)
    state = tmp_path / "state"
    db_url = f"sqlite:///{tmp_path / 'failover-bot.db'}"
    with (
        running_platform(config_path, state) as platform,
        FakeSlackApi(token=BOT_TOKEN, app_token=APP_TOKEN) as slack,
        SocketModeEndpoint() as endpoint,
    ):
        slack.socket_mode_url = endpoint.url
        store = Store(db_url)
        env = _bot_env(config_path, slack, db_url, platform.odbc_env())
        env["SLACK_APP_TOKEN"] = APP_TOKEN
        del env["SLACK_SIGNING_SECRET"]  # Socket Mode deliveries are not signed: the bot needs no secret
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log:
            bot = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve", "--config", str(config_path), "--port", str(free_port())],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            endpoint.wait_connected(timeout=60)
            opened = [c for c in slack.calls("apps.connections.open") if c.error is None]
            assert len(opened) == 1  # with the app-level token; the bot token would be refused
            h = Served(config, platform, slack, None, None, state, store=store, _run_service=RunService(store, config))  # type: ignore[arg-type]
            people = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
            for uid, name in people.items():
                h.people[uid] = SocketPerson(uid, name, endpoint=endpoint, slack=slack)
            for host in ("as-a", "ss-a1", "ss-a2"):
                h.faults(host, refuse=True)  # site-a is down

            h.person(BOB).command("help")
            h.wait_until("the help answer", lambda: any("Usage" in e.text for e in slack.ephemerals(BOB)))
            fo = h.start(ALICE, "start site-a scope=account")
            view = h.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))

            assert view.run.state == "completed", bot_log(log_path)
            assert all(sv.state in (StepState.SUCCEEDED, StepState.SKIPPED) for sv in view.steps if sv.row.posted_at)
            assert h.changing_operations()[:2] == FAILOVER_ACCOUNT_CHANGES
            acks = [a for person in h.people.values() for a in person.acks]  # type: ignore[attr-defined]
            kinds = {kind for kind, _, _ in acks}
            assert kinds == {"slash_commands", "interactive"}
            assert len(acks) >= 6
            assert all(ack.get("envelope_id") for _, _, ack in acks)
            assert max(seconds for _, seconds, _ in acks) < ACK_DEADLINE_S
            assert endpoint.connections_opened == 1  # one connection, kept all along
        finally:
            bot.kill()
            bot.wait(timeout=10)
            store.dispose()
    text = bot_log(log_path)
    assert "serving in Socket Mode" in text
    assert "Traceback" not in text


def bot_log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def test_the_stand_in_opens_sockets_only_for_the_app_level_token() -> None:
    with FakeSlackApi(token=BOT_TOKEN, app_token=APP_TOKEN) as slack, SocketModeEndpoint() as endpoint:
        slack.socket_mode_url = endpoint.url
        client = WebClient(base_url=slack.api_url)
        assert client.apps_connections_open(app_token=APP_TOKEN)["url"].startswith("ws://127.0.0.1:")
        for token, error in ((BOT_TOKEN, "not_allowed_token_type"), ("xapp-wrong", "invalid_auth")):
            with pytest.raises(SlackApiError) as caught:
                client.apps_connections_open(app_token=token)
            assert caught.value.response["error"] == error
        with pytest.raises(SlackApiError) as caught:
            WebClient(token=APP_TOKEN, base_url=slack.api_url).auth_test()
        assert caught.value.response["error"] == "not_allowed_token_type"
