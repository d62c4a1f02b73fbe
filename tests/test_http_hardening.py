"""`serve` over HTTP refuses what Slack would never send, cheaply, and never logs a request body.

Findings 1 and 14 of the security issue: bodies above 1 MiB get 413 before they are buffered,
unsigned requests 401, signed but unparsable ones 400 (never 500), and a missing signing secret or a
bot token Slack refuses stop the bot at start with one clear line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from bot.runtime import build_runtime
from bot.store.db import Store
from sandbox.rehearsal import BOT_TOKEN, SIGNING_SECRET
from sandbox.slack_api import FakeSlackApi
from tests.support.paths import ROOT
from tests.support.platform import write_config
from tests.support.serve_process import Served, served

MARKER = "BODY-MARKER-7f3a9c"
MiB = 1 << 20


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("served")) as h:
        yield h


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/slack/events", data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=20) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _signed(body: bytes, content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    """Slack's v0 signature over the raw bytes (written out here, independently of the bot's code)."""
    ts = str(int(time.time()))
    mac = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + mac}


def _raw_status(port: int, head: bytes, body: bytes = b"") -> int:
    """Send ``head`` and as much of ``body`` as the server takes, then read the status line it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        try:
            for at in range(0, len(body), 64 * 1024):
                sock.sendall(body[at : at + 64 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading the rest: what we want
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def _head(length: int, headers: dict[str, str]) -> bytes:
    lines = [f"{k}: {v}" for k, v in headers.items()]
    return ("POST /slack/events HTTP/1.1\r\nHost: x\r\n" + "".join(f"{line}\r\n" for line in lines)).encode() + (
        b"Content-Length: %d\r\n\r\n" % length
    )


def _log(h: Served) -> str:
    return h.replicas[0].log_path.read_text(encoding="utf-8", errors="replace")


def test_oversized_bodies_get_413_before_they_are_read(bot: Served) -> None:
    port = bot.replicas[0].port
    too_big = (MARKER + "x" * (2 * MiB)).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _raw_status(port, _head(len(too_big), form), too_big) == 413
    assert _raw_status(port, _head(len(too_big), _signed(too_big)), too_big) == 413  # even when signed
    just_over = b"z" * (MiB + 1)
    assert _raw_status(port, _head(len(just_over), _signed(just_over)), just_over) == 413
    assert _raw_status(port, _head(64 * MiB, form), b"{" + MARKER.encode()) == 413  # 64 MiB announced, 20 B sent
    chunked = b"POST /slack/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"%x\r\n%s\r\n" % (256 * 1024, b"y" * 256 * 1024)
    assert _raw_status(port, chunked, piece * 5) == 413  # no length announced: counted as it arrives
    assert bot.replicas[0].alive


def test_unsigned_and_malformed_requests_get_401_and_400_and_no_body_is_logged(bot: Served) -> None:
    url = bot.replicas[0].url
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    not_json = urlencode({"payload": "{not json " + MARKER}).encode()
    assert _post(url, not_json, form)[0] == 401  # was 500: bolt parsed it before checking the signature
    assert _post(url, f"command=/failover&text={MARKER}".encode(), form)[0] == 401
    stale = _signed(b"x")
    stale["X-Slack-Request-Timestamp"] = str(int(time.time()) - 3600)
    assert _post(url, f"text={MARKER}".encode(), stale)[0] == 401
    assert _post(url, not_json, _signed(not_json))[0] == 400
    assert _post(url, b"\xff\xfe" + MARKER.encode(), _signed(b"\xff\xfe" + MARKER.encode()))[0] == 400
    event = ("[" + json.dumps(MARKER) + "]").encode()
    assert _post(url, event, _signed(event, "application/json"))[0] == 400
    assert _post(url, b"{" + MARKER.encode(), _signed(b"{" + MARKER.encode(), "application/json"))[0] == 400
    bot.person("U0BOB").command("help")  # a real, signed command still works
    bot.wait_until("the help answer", lambda: any("Usage" in e.text for e in bot.slack.ephemerals("U0BOB")))
    time.sleep(0.5)  # let the log catch up
    log = _log(bot)
    assert "refused an unsigned or wrongly signed request" in log
    assert "refused a malformed signed request" in log
    assert MARKER not in log
    assert "Traceback" not in log


def test_no_signing_secret_or_a_refused_token_stops_the_bot_at_start(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "cfg"))
    with FakeSlackApi(token=BOT_TOKEN) as slack:
        store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
        try:
            with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET is not set"):
                build_runtime(config, store=store, token=BOT_TOKEN, signing_secret="", api_url=slack.api_url)
            with pytest.raises(ConfigError, match="Slack did not accept SLACK_BOT_TOKEN"):
                build_runtime(config, store=store, token="xoxb-wrong", signing_secret="s", api_url=slack.api_url)
        finally:
            store.dispose()


def test_serve_with_a_token_slack_refuses_exits_2_with_one_line(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "cfg")
    with FakeSlackApi(token=BOT_TOKEN) as slack:
        env = {
            "PATH": "/usr/bin:/bin",
            "SLACK_BOT_TOKEN": "xoxb-not-the-bots-token",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "FAILOVER_DB_URL": f"sqlite:///{tmp_path / 'bot.db'}",
            "FAILOVER_WINRM_USER": "u",
            "FAILOVER_WINRM_PASSWORD": "p",
            **{name: "Driver=x" for name in load_config(config_path).odbc_envs()},
        }
        done = subprocess.run(
            [sys.executable, "-m", "bot", "serve", "--config", str(config_path), "--port", "0", "--host", "127.0.0.1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("failover-bot:")]
    assert len(errors) == 1 and "Slack did not accept SLACK_BOT_TOKEN" in errors[0]
    assert "Traceback" not in done.stderr
