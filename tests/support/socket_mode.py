"""Slack's Socket Mode on loopback: a websocket endpoint that delivers envelopes and collects acknowledgements.

``apps.connections.open`` on the Slack stand-in hands out this endpoint's ``ws://127.0.0.1`` URL; the
bot connects with slack_sdk's own Socket Mode client, receives ``hello``, then envelopes
(``slash_commands``, ``interactive``, ``events_api``) and must answer each with its ``envelope_id``.
``SocketPerson`` is a scripted person whose deliveries travel this way instead of over HTTP.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from sandbox.people import API_APP_ID, Response, SlackPerson
from sandbox.slack_api import FakeSlackApi

ACK_DEADLINE_S = 3.0  # Slack's: an envelope not acknowledged within 3 s is delivered again


class NotAcknowledged(AssertionError):
    """The bot did not acknowledge an envelope in time."""


class SocketModeEndpoint:
    """A websocket server on 127.0.0.1 playing Slack's side of Socket Mode."""

    def __init__(self) -> None:
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()
        self._connections: list[ServerConnection] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []  # everything the bot sent, in order
        self.connections_opened = 0

    def start(self) -> SocketModeEndpoint:
        self._server = serve(self._session, "127.0.0.1", 0, ping_interval=None)
        self._thread = threading.Thread(target=self._server.serve_forever, name="socket-mode", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SocketModeEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}/link/?ticket={uuid.uuid4()}&app_id={API_APP_ID}"

    def _session(self, conn: ServerConnection) -> None:
        with self._lock:
            self._connections.append(conn)
            self.connections_opened += 1
            self._lock.notify_all()
        conn.send(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": API_APP_ID}}))
        try:
            for raw in conn:
                message = json.loads(raw)
                with self._lock:
                    self.received.append(message)
                    if isinstance(message, dict) and message.get("envelope_id"):
                        self._acks[str(message["envelope_id"])] = message
                    self._lock.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._connections.remove(conn)
                self._lock.notify_all()

    def wait_connected(self, timeout: float) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: bool(self._connections), timeout=timeout):
                raise TimeoutError(f"no Socket Mode client connected within {timeout} s")

    def deliver(self, kind: str, payload: dict[str, Any], timeout: float = ACK_DEADLINE_S) -> dict[str, Any]:
        """Send one envelope to the connected client and return its acknowledgement (NotAcknowledged if none)."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        with self._lock:
            if not self._connections:
                raise NotAcknowledged("no Socket Mode client is connected")
            conn = self._connections[-1]
        conn.send(json.dumps(envelope))
        with self._lock:
            if not self._lock.wait_for(lambda: envelope_id in self._acks, timeout=timeout):
                raise NotAcknowledged(f"{kind} envelope {envelope_id} not acknowledged within {timeout} s")
            return self._acks[envelope_id]


class SocketPerson(SlackPerson):
    """A Slack user whose commands and clicks reach the bot as Socket Mode envelopes."""

    def __init__(self, user_id: str, user_name: str, *, endpoint: SocketModeEndpoint, slack: FakeSlackApi) -> None:
        super().__init__(user_id, user_name, bot_url="http://127.0.0.1:9", signing_secret="unused", slack=slack)
        self.endpoint = endpoint
        self.acks: list[tuple[str, float, dict[str, Any]]] = []  # (kind, seconds to the ack, the ack)

    def send(
        self,
        body: str,
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> Response:
        fields = dict(parse_qsl(body, keep_blank_values=True))
        if "payload" in fields:
            kind, payload = "interactive", json.loads(fields["payload"])
        else:
            kind, payload = "slash_commands", fields
        started = time.monotonic()
        ack = self.endpoint.deliver(kind, payload)
        elapsed = time.monotonic() - started
        self.acks.append((kind, elapsed, ack))
        return Response(200, json.dumps(ack), elapsed)
