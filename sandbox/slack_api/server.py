"""The Slack stand-in's HTTP server on loopback: routes Web API, response_url and upload requests, injects faults."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.slack_api.auth import APP_LEVEL_METHODS, AuthApi
from sandbox.slack_api.directory import DirectoryApi
from sandbox.slack_api.files import FilesApi
from sandbox.slack_api.messages import MessagesApi
from sandbox.slack_api.model import Injection, SlackApiError
from sandbox.slack_api.views import ViewsApi


class FakeSlackApi(MessagesApi, ViewsApi, FilesApi, DirectoryApi, AuthApi):
    """Slack's Web API on 127.0.0.1 for ``WebClient(base_url=f"{fake.url}/api/")``, with a conversation model."""

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeSlackApi:
        if self._server is not None:
            return self
        fake = self

        class Handler(_Handler):
            api = fake

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeSlackApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults ----------------------------------------------------------------------------------

    def limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After: retry_after``."""
        with self._lock:
            self._injections.setdefault(method, []).append(Injection(times, 429, "ratelimited", retry_after))

    def fail(self, method: str, error: str, times: int = 1, status: int = 200) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        with self._lock:
            self._injections.setdefault(method, []).append(Injection(times, status, error))

    def _take_injection(self, method: str) -> Injection | None:
        queue = self._injections.get(method)
        if not queue:
            return None
        injection = queue[0]
        injection.times -= 1
        if injection.times <= 0:
            queue.pop(0)
        return injection

    # ---- request handling (called from the HTTP handler) -----------------------------------------

    def handle_api(
        self, method: str, params: dict[str, Any], auth: str | None
    ) -> tuple[int, dict[str, Any], int | None]:
        """Answer one Web API call: (HTTP status, JSON body, Retry-After or None)."""
        with self._lock:
            injected = self._take_injection(method)
            if injected is not None:
                self._record(method, params, injected.status, injected.error)
                return injected.status, {"ok": False, "error": injected.error}, injected.retry_after
            try:
                self._check_token(auth, params, app_level=method in APP_LEVEL_METHODS)
                handler = _METHODS.get(method)
                if handler is None:
                    raise SlackApiError("unknown_method")
                body = handler(self, params)
            except SlackApiError as exc:
                self._record(method, params, exc.status, exc.error)
                return exc.status, {"ok": False, "error": exc.error}, None
            self._record(method, params, 200, None)
            return 200, {"ok": True, **body}, None


# The Web API methods this stand-in answers, by area; any other method answers unknown_method, as Slack does.
_METHODS: dict[str, Callable[[FakeSlackApi, dict[str, Any]], dict[str, Any]]] = {
    "chat.postMessage": FakeSlackApi._post,
    "chat.update": FakeSlackApi._update,
    "chat.postEphemeral": FakeSlackApi._post_ephemeral,
    "chat.getPermalink": FakeSlackApi._get_permalink,
    "conversations.info": FakeSlackApi._conversations_info,
    "conversations.replies": FakeSlackApi._conversations_replies,
    "conversations.history": FakeSlackApi._conversations_history,
    "views.open": FakeSlackApi._views_open,
    "views.update": FakeSlackApi._views_update,
    "views.publish": FakeSlackApi._views_publish,
    "files.getUploadURLExternal": FakeSlackApi._get_upload_url_external,
    "files.completeUploadExternal": FakeSlackApi._complete_upload_external,
    "users.info": FakeSlackApi._users_info,
    "usergroups.users.list": FakeSlackApi._usergroup_users,
    "auth.test": FakeSlackApi._auth_test,
    "apps.connections.open": FakeSlackApi._connections_open,
}


class _Handler(BaseHTTPRequestHandler):
    api: FakeSlackApi

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        return

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.startswith("/upload/v1/"):  # a file's bytes, as they are: not a form, not JSON
            status, text = self.api.handle_upload(self.path[len("/upload/v1/") :], raw)
            self._reply(status, text.encode("utf-8"), "text/plain; charset=utf-8")
            return
        self._dispatch(raw)

    def _dispatch(self, raw: bytes) -> None:
        parts = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            params.update(self._body(raw))
        except ValueError:
            self._send(400, {"ok": False, "error": "invalid_json"})
            return
        if parts.path.startswith("/api/"):
            status, body, retry_after = self.api.handle_api(
                parts.path[len("/api/") :], params, self.headers.get("Authorization")
            )
            self._send(status, body, retry_after)
        elif parts.path.startswith("/response_url/") and self.command == "POST":
            status, body = self.api.handle_response_url(parts.path[len("/response_url/") :], params)
            self._send(status, body)
        else:
            self._send(404, {"ok": False, "error": "not_found"})

    def _body(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        content_type = (self.headers.get("Content-Type") or "").lower()
        text = raw.decode("utf-8")
        if content_type.startswith("application/json"):
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("JSON body is not an object")
            return body
        return dict(parse_qsl(text, keep_blank_values=True))

    def _send(self, status: int, body: dict[str, Any], retry_after: int | None = None) -> None:
        self._reply(status, json.dumps(body).encode("utf-8"), "application/json; charset=utf-8", retry_after)

    def _reply(self, status: int, data: bytes, content_type: str, retry_after: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)
