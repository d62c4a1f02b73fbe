"""The HTTP side of a simulated host: POST /wsman over kept-alive HTTP/1.1 connections, as HTTP.sys serves it.

Authentication is per host: Basic, or NTLM (``transport: ntlm``), which authenticates the connection and,
over plain HTTP, requires WinRM message encryption both ways (AllowUnencrypted=false). A listener whose
URLs are https:// serves TLS with a certificate from the platform's test CA (sandbox/simulator/security.py).
Injected faults and the cost of a new connection (``handshake_ms``) are applied per request; a connection
stays open between requests until the client closes it or stays idle too long.
"""

from __future__ import annotations

import base64
import hmac
import logging
import socket
import ssl
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.simulator.host_state import HostState
from sandbox.simulator.security import ENCRYPTED_CONTENT_TYPE, EncryptionError, NtlmConnection
from sandbox.simulator.wsman import WSManService

MAX_BODY = 4 * 1024 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def accepts(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        username, _, password = decoded.partition(":")
        # Windows compares user names case-insensitively.
        return hmac.compare_digest(username.lower().encode(), self.username.lower().encode()) and hmac.compare_digest(
            password.encode(), self.password.encode()
        )

    def is_user(self, principal: str) -> bool:
        """Whether an NTLM-authenticated principal (``user``, ``DOMAIN\\user`` or ``user@realm``) is this user."""
        name = principal.rsplit("\\", 1)[-1].split("@", 1)[0]
        return hmac.compare_digest(name.lower().encode(), self.username.lower().split("@", 1)[0].encode())


@dataclass(frozen=True)
class Route:
    """One host served at a URL path of a listening socket."""

    state: HostState
    credentials: Credentials
    wsman: WSManService
    transport: str = "basic"  # basic | ntlm
    encrypted: bool = False  # NTLM over plain HTTP: every message must be sealed


class EndpointServer(ThreadingHTTPServer):
    """One listening socket (host:port); routes by URL path to the hosts configured there."""

    daemon_threads = False  # server_close() joins the request threads
    block_on_close = True

    def __init__(
        self,
        address: tuple[str, int],
        routes: dict[str, Route],
        stopping: threading.Event,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.routes = routes
        self.stopping = stopping
        self.tls = tls
        self.accepted = 0  # TCP connections accepted so far (kept-alive connections count once)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The TLS handshake happens in the request thread, on the first read.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self.accepted += 1
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        # Kept-alive connections idle in a request thread: end them so closing does not wait for their timeout.
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("connection already closed")
        super().server_close()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # faults.json "refuse": the host is down. Reset the connection without answering.
        if self.routes and all(route.state.faults().refuse for route in self.routes.values()):
            reset_connection(request)
            return False
        return True


def reset_connection(sock: socket.socket) -> None:
    """Close with SO_LINGER 0 so the peer gets a TCP reset, as from a host that is not there."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        log.debug("socket already gone before the reset")  # the client left first: nothing to reset
    sock.close()


class _Handler(BaseHTTPRequestHandler):
    server: EndpointServer
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # HTTP.sys keeps connections alive; NTLM authenticates a connection, not a request
    timeout = 120  # HTTP.sys closes a connection idle for 2 minutes (IdleConnectionTimeout)

    def setup(self) -> None:
        super().setup()
        self.fresh = True  # no request answered on this connection yet: it pays the handshake
        self.ntlm = NtlmConnection()

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            # A client that refuses our certificate (wrong CA or name) or drops the connection.
            log.debug("connection ended: %s", exc)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self._read_body()
        if body is None:
            return
        route = self.server.routes.get(self.path.split("?", 1)[0].rstrip("/").lower())
        if route is None:
            self._send(404, b"", "text/plain")
            return
        faults = route.state.faults()
        if faults.refuse:
            self.close_connection = True
            reset_connection(self.connection)
            return
        delay_ms = faults.latency_ms + (faults.handshake_ms if self.fresh else 0)
        self.fresh = False
        if delay_ms and self.server.stopping.wait(delay_ms / 1000):
            self.close_connection = True
            return
        if route.transport == "ntlm":
            self._ntlm(route, body, faults.reject_auth)
            return
        if faults.reject_auth or not route.credentials.accepts(self.headers.get("Authorization")):
            self._send(401, b"", "text/plain", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        content_type = self.headers.get("Content-Type", "")
        if "application/soap+xml" not in content_type.lower():
            self._send(415, b"", "text/plain")
            return
        if not body:
            self._send(400, b"", "text/plain")
            return
        status, reply = route.wsman.handle(body)
        self._send(status, reply, "application/soap+xml;charset=UTF-8")

    def _ntlm(self, route: Route, body: bytes, reject: bool) -> None:
        """NTLM over Negotiate: a three-leg handshake on this connection, then sealed messages."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token:
            try:
                challenge = self.ntlm.step(base64.b64decode(token.strip(), validate=True))
            except ValueError:
                challenge, self.ntlm = None, NtlmConnection()
            if challenge is not None:
                self._send(
                    401, b"", "text/plain", {"WWW-Authenticate": "Negotiate " + base64.b64encode(challenge).decode()}
                )
                return
        if reject or not self.ntlm.authenticated or not route.credentials.is_user(self.ntlm.user or ""):
            self.ntlm = NtlmConnection()
            self._send(401, b"", "text/plain", {"WWW-Authenticate": "Negotiate"})
            return
        if not body:  # the client's empty request that sets up the security context
            self._send(200, b"", "application/soap+xml;charset=UTF-8")
            return
        content_type = self.headers.get("Content-Type", "").lower()
        sealed = content_type.startswith("multipart/encrypted")
        if route.encrypted and not sealed:
            self._send(400, b"", "text/plain")  # AllowUnencrypted=false: plain SOAP over HTTP is refused
            return
        if sealed:
            try:
                body = self.ntlm.decrypt(body)
            except EncryptionError as exc:
                log.info("%s: encrypted message refused: %s", route.state.name, exc)
                self._send(400, b"", "text/plain")
                return
        elif "application/soap+xml" not in content_type:
            self._send(415, b"", "text/plain")
            return
        status, reply = route.wsman.handle(body)
        if sealed:
            self._send(status, self.ntlm.encrypt(reply), ENCRYPTED_CONTENT_TYPE)
        else:
            self._send(status, reply, "application/soap+xml;charset=UTF-8")

    def _read_body(self) -> bytes | None:
        """The request body, read whole so the kept-alive connection stays in step; None when refused."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(413 if length > MAX_BODY else 400, b"", "text/plain")
            return None
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802
        self._send(405, b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass
