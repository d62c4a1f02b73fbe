"""Serving the bot: HTTP with waitress (``POST /slack/events``, ``GET /healthz``) or Socket Mode."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler
from waitress.server import create_server

from bot import config as cfg
from bot.app import Runtime, build_runtime
from bot.config import Config

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


def wsgi_app(runtime: Runtime) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    slack = SlackRequestHandler(runtime.app)

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
            return slack(environ, start_response)  # type: ignore[no-any-return]
        body = b"not found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return application


def start_up(runtime: Runtime) -> None:
    """Reconcile runs left unfinished by a previous process, bring their threads up to date, start reminders."""
    for line in runtime.context.worker.recover():
        log.info("recovery: %s", line)
    active = runtime.context.service.active_run()
    if active is not None:
        runtime.context.presenter.sync(active.id)
        runtime.context.worker.kick(active.id)
    runtime.reminders.start()  # sends only on the replica holding the scheduler lock
    runtime.readiness.start()  # rounds run only on that replica too


class HttpBot:
    """The bot's HTTP endpoint on a background thread (tests, the demo) or in the foreground (serve)."""

    def __init__(self, runtime: Runtime, *, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> None:
        self.runtime = runtime
        self.server = create_server(wsgi_app(runtime), host=host, port=port, threads=threads)
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


def serve(config: Config, *, port: int = 3000, host: str = "0.0.0.0") -> None:
    runtime = build_runtime(config)
    start_up(runtime)
    app_token = cfg.secret("SLACK_APP_TOKEN")
    try:
        if app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            log.info("serving in Socket Mode")
            SocketModeHandler(runtime.app, app_token).start()
        else:
            bot = HttpBot(runtime, host=host, port=port, threads=48)
            log.info("serving HTTP on %s:%d (POST /slack/events, GET /healthz)", host, port)
            bot.server.run()
    finally:
        runtime.close()
