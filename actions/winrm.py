"""The WinRM executor: one reused shell per host, operations sent as templates over stdin, errors translated."""

from __future__ import annotations

import html
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from xml.etree import ElementTree

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from actions import protocol
from actions.errors import (
    AuthenticationFailed,
    ExecutionError,
    HostUnreachable,
    OperationTimedOut,
    RemoteOperationFailed,
)
from actions.hosts import Host
from actions.request_counting import RequestHook, count_session

log = logging.getLogger(__name__)

# WS-Man faults after which a fresh shell helps: the shell is gone (idle timeout, service restart,
# reboot) or the per-user shell/command quota is exhausted.
SHELL_NOT_FOUND = 2150858843
QUOTA_EXCEEDED = 2150859174
RESET_FAULTS = frozenset({SHELL_NOT_FOUND, QUOTA_EXCEEDED})
RECEIVE_PAUSE_S = 0.05
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # per stream of one operation; a Settings.xml read is a few kB
# HTTP.sys closes a connection idle for 120 s. NTLM/Kerberos authenticate the connection and message
# encryption is bound to it: a message sealed for a closed connection cannot be re-sent on a new one. So a
# host's HTTP session idle for longer than this is closed and a new one authenticated (the shell stays).
IDLE_RESET_S = 60.0
# stdin travels in Send requests of at most this many bytes: base64 and the envelope make one about 135 KB,
# under the 150 KB MaxEnvelopeSizekb of older or hardened servers (Windows' default is 500 KB).
STDIN_CHUNK = 100_000


# --------------------------------------------------------------------------- stderr


_CLIXML_ERROR = re.compile(r'<S S="Error">(.*?)</S>', re.DOTALL)
_XML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def clixml_to_text(stderr: bytes) -> str:
    """The error text of PowerShell's stderr; CLIXML error records decoded, progress records dropped."""
    text = stderr.decode("utf-8", errors="replace")
    if "#< CLIXML" not in text:
        return text.strip()
    parts = [_XML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), html.unescape(s)) for s in _CLIXML_ERROR.findall(text)]
    lines = [ln.rstrip() for ln in "".join(parts).replace("\r\n", "\n").split("\n")]
    return "\n".join(ln for ln in lines if ln).strip()


# --------------------------------------------------------------------------- the executor


@dataclass
class _Channel:
    """The connection to one host: its Protocol, its open shell and the lock that serialises commands."""

    protocol: Protocol
    lock: threading.Lock = field(default_factory=threading.Lock)
    shell_id: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    counted: object | None = None  # the HTTP session the request hook was mounted on, if there is a hook


class _RetryInFreshShell(Exception):
    """The shell was gone or over quota before the script was delivered."""


def _transport_settings(host: Host) -> dict[str, Any]:
    ep = host.winrm
    username: str | None = None
    password: str | None = None
    if ep.transport != "certificate":
        username = ep.credentials.username or None
        password = ep.credentials.password
        if username is None and ep.transport != "kerberos":
            raise AuthenticationFailed(
                f"no WinRM user name: environment variable {ep.username_env} is empty", host=host.name
            )
        if not password and ep.transport != "kerberos":
            raise AuthenticationFailed(
                f"no WinRM password: environment variable {ep.password_env} is empty", host=host.name
            )
    encryption = ep.message_encryption
    if ep.transport == "basic" and ep.url.lower().startswith("http:") and encryption == "auto":
        encryption = "never"  # Basic cannot encrypt messages; plain HTTP is for the loopback simulator only
    return {
        "endpoint": ep.url,
        "transport": ep.transport,
        "username": username,
        "password": password or None,
        "cert_pem": ep.cert_pem,
        "cert_key_pem": ep.cert_key_pem,
        "server_cert_validation": ep.server_cert_validation,
        "ca_trust_path": ep.ca_trust_path,  # explicit, so REQUESTS_CA_BUNDLE is never picked up silently
        "message_encryption": encryption,
        "read_timeout_sec": ep.read_timeout_s,
        "operation_timeout_sec": ep.operation_timeout_s,
        "proxy": None,  # never an environment proxy
    }


def _translate(host: Host, doing: str, exc: BaseException) -> ExecutionError:
    """Our error for a pywinrm/requests failure; never carries credentials."""
    name = host.name
    if isinstance(exc, ExecutionError):
        return exc
    if isinstance(exc, InvalidCredentialsError):
        return AuthenticationFailed(f"{doing}: the host rejected the credentials ({exc})", host=name)
    if isinstance(exc, requests.exceptions.SSLError):
        return HostUnreachable(f"{doing}: TLS failure talking to {host.winrm.url}", host=name)
    if isinstance(exc, requests.exceptions.Timeout):
        return HostUnreachable(
            f"{doing}: no answer from {host.winrm.url} within {host.winrm.read_timeout_s} s", host=name
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return HostUnreachable(f"{doing}: cannot connect to {host.winrm.url}", host=name)
    if isinstance(exc, requests.exceptions.RequestException):
        return HostUnreachable(f"{doing}: HTTP failure talking to {host.winrm.url}: {type(exc).__name__}", host=name)
    if isinstance(exc, WSManFaultError):
        code = f" {exc.wsman_fault_code}" if exc.wsman_fault_code is not None else ""
        return RemoteOperationFailed(f"{doing}: WinRM fault{code}: {(exc.reason or '').strip()}", host=name)
    if isinstance(exc, WinRMTransportError):
        return HostUnreachable(f"{doing}: HTTP {exc.code} from {host.winrm.url}", host=name)
    if isinstance(exc, WinRMError):
        return HostUnreachable(f"{doing}: {exc}", host=name)
    if isinstance(exc, _NOT_WSMAN):
        return HostUnreachable(
            f"{doing}: {host.winrm.url} answered, but not with WS-Management (is it the WinRM port?)", host=name
        )
    return RemoteOperationFailed(f"{doing}: {type(exc).__name__}: {exc}", host=name)


# pywinrm parsing an answer that is not WS-Management (e.g. 200 text/html from a web server on that port)
_NOT_WSMAN = (ElementTree.ParseError, StopIteration)
_CAUGHT = (WinRMError, WinRMTransportError, requests.exceptions.RequestException, *_NOT_WSMAN)


class WinRMExecutor:
    """Runs operations on Windows hosts over WinRM: one shell per host, one command at a time per host."""

    def __init__(self, *, on_request: RequestHook | None = None) -> None:
        self._on_request = on_request
        self._channels: dict[str, _Channel] = {}
        self._guard = threading.Lock()

    def __enter__(self) -> WinRMExecutor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ public

    def run(self, host: Host, op: str, data: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        """Run operation ``op`` with ``data`` on ``host``; its result (``ok`` true) or one of our errors."""
        script = protocol.render(op, data)
        limit = float(timeout_s if timeout_s is not None else host.winrm.command_timeout_s)
        deadline = time.monotonic() + limit
        channel = self._channel(host)
        if not channel.lock.acquire(timeout=limit):
            raise OperationTimedOut(
                f"{op}: timed out after {limit:g} s waiting for the previous operation", host=host.name
            )
        started = time.monotonic()
        try:
            if started - channel.last_used > IDLE_RESET_S:
                channel.protocol.transport.close_session()  # a fresh, freshly authenticated connection
            try:
                rc, stdout, stderr = self._run_script(host, channel, op, script, deadline, limit)
            except _RetryInFreshShell:
                log.info("%s: shell gone or over quota; opening a new one", host.name)
                self._drop_shell(host, channel)
                rc, stdout, stderr = self._run_script(host, channel, op, script, deadline, limit, retry=False)
        finally:
            channel.last_used = time.monotonic()
            channel.lock.release()
        result = self._result(host, op, rc, stdout, stderr)
        log.info("%s: %s ok in %.2f s", host.name, op, time.monotonic() - started)
        return result

    def close(self) -> None:
        """Close every shell and HTTP session; safe to call twice."""
        with self._guard:
            channels = list(self._channels.items())
            self._channels.clear()
        for name, channel in channels:
            acquired = channel.lock.acquire(timeout=channel.protocol.transport.read_timeout_sec or 30)
            try:
                if channel.shell_id is not None:
                    try:
                        channel.protocol.close_shell(channel.shell_id, close_session=False)
                    except _CAUGHT as exc:
                        log.warning("%s: could not close the shell: %s", name, type(exc).__name__)
                channel.shell_id = None
                channel.protocol.transport.close_session()
            finally:
                if acquired:
                    channel.lock.release()

    # ------------------------------------------------------------------ internals

    def _channel(self, host: Host) -> _Channel:
        with self._guard:
            channel = self._channels.get(host.name)
            if channel is None:
                try:
                    proto = Protocol(**_transport_settings(host))
                except InvalidCredentialsError as exc:
                    raise AuthenticationFailed(f"cannot authenticate: {exc}", host=host.name) from exc
                except WinRMError as exc:
                    raise HostUnreachable(f"cannot set up WinRM: {exc}", host=host.name) from exc
                channel = self._channels[host.name] = _Channel(proto)
            return channel

    def _count_requests(self, host: Host, channel: _Channel) -> None:
        """With a request hook (benches, tests): count the requests of each HTTP session pywinrm builds for this host.

        Building it here is what pywinrm's first send would do; NTLM or Kerberos message encryption sends one
        context-setup request while building it, which is not counted.
        """
        if self._on_request is None:
            return
        transport = channel.protocol.transport
        if transport.session is None or transport.session is not channel.counted:
            session = transport.build_session()
            count_session(session, host.name, self._on_request)
            channel.counted = session

    def _drop_shell(self, host: Host, channel: _Channel) -> None:
        if channel.shell_id is None:
            return
        shell_id, channel.shell_id = channel.shell_id, None
        try:
            channel.protocol.close_shell(shell_id, close_session=False)
        except _CAUGHT as exc:
            log.info("%s: old shell not closed (%s)", host.name, type(exc).__name__)

    def _run_script(
        self, host: Host, channel: _Channel, op: str, script: str, deadline: float, limit: float, *, retry: bool = True
    ) -> tuple[int, bytes, bytes]:
        proto = channel.protocol
        try:
            self._count_requests(host, channel)
            if channel.shell_id is None:
                channel.shell_id = proto.open_shell(codepage=65001, noprofile=True)
            shell_id = channel.shell_id
            arguments, stdin = protocol.command_arguments(script, over_stdin=op in protocol.STDIN_OPERATIONS)
            # stdin as a pipe, not a console (WINRS_CONSOLEMODE_STDIN false), as Ansible does.
            command_id = proto.run_command(shell_id, protocol.POWERSHELL, arguments, console_mode_stdin=stdin is None)
        except WSManFaultError as exc:
            if retry and exc.wsman_fault_code in RESET_FAULTS:
                raise _RetryInFreshShell from exc
            raise _translate(host, op, exc) from exc
        except _CAUGHT as exc:
            raise _translate(host, op, exc) from exc
        try:
            try:
                if stdin is not None:  # a large script: the bootstrap reads it from stdin
                    # Bytes, not str: pywinrm would encode a str as codepage 437. In pieces: one Send must
                    # fit the host's MaxEnvelopeSizekb.
                    pieces = [stdin[i : i + STDIN_CHUNK] for i in range(0, len(stdin), STDIN_CHUNK)] or [b""]
                    for index, piece in enumerate(pieces):
                        proto.send_command_input(shell_id, command_id, piece, end=index == len(pieces) - 1)
            except WSManFaultError as exc:
                if retry and exc.wsman_fault_code == SHELL_NOT_FOUND:
                    raise _RetryInFreshShell from exc
                raise
            return self._receive(host, proto, shell_id, command_id, op, deadline, limit)
        except _CAUGHT as exc:
            raise _translate(host, op, exc) from exc
        finally:
            try:
                proto.cleanup_command(shell_id, command_id)
            except _CAUGHT as exc:
                # The command may linger on the host: start the next operation in a fresh shell.
                log.warning("%s: %s: terminate signal failed (%s)", host.name, op, type(exc).__name__)
                channel.shell_id = None

    def _receive(
        self, host: Host, proto: Protocol, shell_id: str, command_id: str, op: str, deadline: float, limit: float
    ) -> tuple[int, bytes, bytes]:
        """Our own Receive loop: pywinrm's get_command_output would retry operation timeouts forever."""
        configured = proto.operation_timeout_sec
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        kept = {"out": 0, "err": 0}  # bytes kept per stream: beyond MAX_OUTPUT_BYTES, output is read and dropped
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OperationTimedOut(f"{op}: timed out after {limit:g} s", host=host.name)
                # The host holds a Receive open for OperationTimeout: never past our deadline.
                proto.operation_timeout_sec = max(1, min(configured, math.ceil(remaining)))
                asked = time.monotonic()
                try:
                    out, err, rc, done = proto.get_command_output_raw(shell_id, command_id)
                except WinRMOperationTimeoutError:
                    # Windows holds a Receive for the whole OperationTimeout; one answering "no output yet"
                    # at once must not make us spin.
                    if time.monotonic() - asked < RECEIVE_PAUSE_S:
                        time.sleep(max(0.0, min(RECEIVE_PAUSE_S, deadline - time.monotonic())))
                    continue
                for name, chunks, data in (("out", stdout, out), ("err", stderr, err)):
                    room = MAX_OUTPUT_BYTES - kept[name]
                    if room > 0:
                        chunks.append(data[:room])
                    kept[name] += len(data)
                if kept["out"] > MAX_OUTPUT_BYTES:
                    raise RemoteOperationFailed(
                        f"{op}: output larger than {MAX_OUTPUT_BYTES} bytes; truncated and not read", host=host.name
                    )
                if done:
                    err_text = b"".join(stderr)
                    if kept["err"] > MAX_OUTPUT_BYTES:
                        err_text += b"\n... (error output truncated at %d bytes)" % MAX_OUTPUT_BYTES
                    return rc, b"".join(stdout), err_text
        finally:
            proto.operation_timeout_sec = configured

    @staticmethod
    def _result(host: Host, op: str, rc: int, stdout: bytes, stderr: bytes) -> dict[str, Any]:
        try:
            result: dict[str, Any] | None = protocol.parse_result(stdout.decode("utf-8", errors="replace"))
        except protocol.ProtocolError:
            result = None
        if result is not None and result.get("ok") is True and rc == 0:
            return result
        if result is not None and result.get("ok") is False and result.get("error"):
            message = str(result["error"])
        else:
            message = clixml_to_text(stderr) or f"exited with code {rc} without a result"
        raise RemoteOperationFailed(f"{op} failed: {message}", host=host.name)
