"""Serving the bot: HTTP with waitress (``POST /slack/events``, ``GET /healthz``) or Socket Mode.

Over HTTP a request reaches bolt only when it is small (at most ``MAX_BODY_BYTES``; else 413), signed
with the signing secret (else 401) and well-formed (else 400). Request bodies are never logged: a
refusal logs its size and the peer's address only.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal
from urllib.parse import parse_qs

from slack_bolt.adapter.wsgi import SlackRequestHandler
from waitress.server import create_server

from bot import config as cfg
from bot.config import Config
from bot.runtime import Runtime, build_runtime, start_up
from bot.supervisor import WorkerSupervisor, run_worker

__all__ = ["MAX_BODY_BYTES", "HttpBot", "serve", "start_up", "valid_signature", "well_formed", "wsgi_app"]

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
ServeRole = Literal["all", "web", "worker"]
MAX_BODY_BYTES = 1 << 20  # Slack's deliveries are a few kB; 1 MiB is ample


def _answer(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY_BYTES (read no further than that)."""
    try:
        declared = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = MAX_BODY_BYTES + 1
    if declared > MAX_BODY_BYTES:
        return None
    body = bytes(environ["wsgi.input"].read(min(declared, MAX_BODY_BYTES) if declared else MAX_BODY_BYTES + 1))
    return None if len(body) > MAX_BODY_BYTES else body


def well_formed(body: bytes, content_type: str) -> bool:
    """Whether bolt can parse ``body``: JSON for events, a form (with a JSON ``payload``, if any) otherwise."""
    try:
        text = body.decode("utf-8")
        if content_type.startswith("application/json"):
            return isinstance(json.loads(text), dict)
        form = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
        if "payload" in form:
            return len(form["payload"]) == 1 and _interaction_shaped(json.loads(form["payload"][0]))
        return True
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        return False


def valid_signature(secret: str, body: bytes, timestamp: str, signature: str, now: float | None = None) -> bool:
    """Slack's v0 request signature over the raw bytes, within five minutes of ``timestamp``.

    (slack_sdk's SignatureVerifier decodes the body as UTF-8 first and raises on other bytes.)
    """
    if not secret or not timestamp.isdigit() or not signature.startswith("v0="):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > 300:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


_OBJECTS = ("user", "channel", "view", "container", "state", "message")  # objects whenever present
_NULLABLE_OBJECTS = ("team", "enterprise")  # Slack sends null for these in some installations


def _interaction_shaped(payload: object) -> bool:
    """Whether an interaction payload has the shape bolt's routing reads (bolt answers 500 to others)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        return False
    if any(key in payload and not isinstance(payload[key], dict) for key in _OBJECTS):
        return False
    if any(payload.get(key) is not None and not isinstance(payload[key], dict) for key in _NULLABLE_OBJECTS):
        return False
    actions = payload.get("actions", [])
    return isinstance(actions, list) and all(isinstance(a, dict) for a in actions)


def wsgi_app(runtime: Runtime) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    assert runtime.app is not None, "the worker process answers no Slack request"
    slack = SlackRequestHandler(runtime.app)

    def slack_request(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR", "?")
        body = _read_body(environ)
        if body is None:
            log.warning("refused a request from %s: body larger than %d bytes", peer, MAX_BODY_BYTES)
            return _answer(start_response, "413 Content Too Large", "request body too large")
        timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
        signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
        if not valid_signature(runtime.signing_secret, body, timestamp, signature):
            log.warning("refused an unsigned or wrongly signed request from %s (%d bytes)", peer, len(body))
            return _answer(start_response, "401 Unauthorized", "invalid request")
        if not well_formed(body, environ.get("CONTENT_TYPE", "")):
            log.warning("refused a malformed signed request from %s (%d bytes)", peer, len(body))
            return _answer(start_response, "400 Bad Request", "malformed request")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        try:
            return slack(environ, start_response)  # type: ignore[no-any-return]
        except Exception as exc:  # bolt's parsing of a signed body of an unexpected shape (found by fuzzing)
            log.warning("refused a signed request bolt could not read from %s (%s)", peer, type(exc).__name__)
            return _answer(start_response, "400 Bad Request", "malformed request")

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz" and method == "GET":
            ok = runtime.store.healthy()
            body = b"ok\n" if ok else b"database unreachable\n"
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if path == "/slack/events" and method == "POST":
            return slack_request(environ, start_response)
        body = b"not found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return application


class HttpBot:
    """The bot's HTTP endpoint on a background thread (tests, the demo) or in the foreground (serve)."""

    def __init__(self, runtime: Runtime, *, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> None:
        self.runtime = runtime
        # waitress refuses larger bodies with 413 before buffering them (its default is 1 GiB)
        self.server = create_server(
            wsgi_app(runtime), host=host, port=port, threads=threads, max_request_body_size=MAX_BODY_BYTES
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.server.effective_host}:{self.server.effective_port}"  # type: ignore[union-attr]

    def start(self) -> HttpBot:
        self._thread = threading.Thread(target=self.server.run, name="http-bot", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        # waitress keeps its request threads after close(): stop them too, with a deadline.
        dispatcher = getattr(self.server, "task_dispatcher", None)
        if dispatcher is not None:
            dispatcher.shutdown(cancel_pending=True, timeout=timeout_s)


def serve(
    config: Config,
    *,
    port: int = 3000,
    host: str = "0.0.0.0",
    role: ServeRole = "all",
    parent_pid: int | None = None,
    ready_fd: int | None = None,
) -> None:
    """Serve the bot. ``all``: this process answers Slack and a worker process it supervises executes;
    ``web`` and ``worker``: one of the two, for deployments that run them apart (they meet in the database).
    """
    if role == "worker":
        run_worker(config, parent_pid=parent_pid, ready_fd=ready_fd)
        return
    app_token = cfg.secret("SLACK_APP_TOKEN")
    # The worker process loads while this one builds its runtime; it does nothing until released.
    supervisor = WorkerSupervisor(config.path).start() if role == "all" else None
    try:
        runtime = build_runtime(config, socket_mode=bool(app_token), role="web")
    except BaseException:
        if supervisor is not None:
            supervisor.stop()
        raise
    for risk in config.insecure_allowed() + config.check_slack_api_url(cfg.env("SLACK_API_URL")):
        log.warning("insecure transport allowed by the configuration: %s", risk)  # at every start, on purpose
    try:
        if supervisor is not None:  # the worker recovers unfinished runs before this process answers anyone
            assert runtime.hub is not None
            runtime.hub.subscribe(supervisor.forward)
            supervisor.release()
        assert runtime.app is not None
        if app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            log.info("serving in Socket Mode")
            SocketModeHandler(runtime.app, app_token).start()
        else:
            bot = HttpBot(runtime, host=host, port=port, threads=48)
            log.info("serving HTTP on %s:%d (POST /slack/events, GET /healthz)", host, port)
            bot.server.run()
    finally:
        runtime.close()  # finish what people already clicked (recorded), then stop the worker
        if supervisor is not None:
            supervisor.stop()
