"""The simulated host is as strict as Windows on the wire, and the executor copes with what Windows does.

Kept-alive connections and the cost of a new one, MaxEnvelopeSizekb, output split across stream elements
and Receive responses (inside a UTF-8 character too), the shell's code page, CLIXML progress on stderr.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from winrm.exceptions import WSManFaultError
from winrm.protocol import Protocol

from actions import protocol, remote
from actions.request_counting import RequestCounter
from actions.winrm import STDIN_CHUNK, WinRMExecutor, clixml_to_text
from bot.errors import RemoteOperationFailed
from sandbox.simulator import SimulatedPlatform
from sandbox.simulator.powershell import ProcessResult
from sandbox.simulator.wsman import STREAM_PIECE, Command, _pieces
from tests.support.platform import running_platform, write_config

AS = "Attix5ProAccountServer"
SETTINGS = r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[SimulatedPlatform]:
    config = write_config(tmp_path / "config", winrm={"command_timeout_s": 30})
    with running_platform(config, tmp_path / "state") as started:
        yield started


def faults(platform: SimulatedPlatform, host: str, **values: Any) -> None:
    (platform.host_dir(host) / "faults.json").write_text(json.dumps(values), encoding="utf-8")


def raw_client(platform: SimulatedPlatform, host: str) -> Protocol:
    return Protocol(
        platform.config.host(host).winrm.url,
        transport="basic",
        username=os.environ["FAILOVER_WINRM_USER"],
        password=os.environ["FAILOVER_WINRM_PASSWORD"],
        message_encryption="never",
        proxy=None,
        ca_trust_path=None,  # type: ignore[arg-type]
        operation_timeout_sec=5,
        read_timeout_sec=10,
    )


def local(platform: SimulatedPlatform, host: str, windows_path: str) -> Path:
    return platform.states[host].resolve(windows_path)


def padded_settings(current: bytes, size: int) -> bytes:
    """``current`` with an XML comment that brings it to about ``size`` bytes (non-ASCII included)."""
    filler = ("Überwachung ł " * (size // 15 + 1)).encode("utf-8")[: max(0, size - len(current))]
    return current.replace(b"</Settings>", b"<!-- " + filler.replace(b"--", b"..") + b" -->\r\n</Settings>")


# --------------------------------------------------------------------------- connections


def test_one_kept_alive_connection_per_host_across_operations(platform: SimulatedPlatform) -> None:
    """HTTP.sys keeps connections alive: the executor's operations on a host share one TCP connection."""
    host = platform.config.host("as-b")
    with WinRMExecutor() as ex:
        for _ in range(4):
            remote.query_service(ex, host, AS)
            remote.read_file(ex, host, SETTINGS)
    assert platform.connections("as-b") == 1


def test_handshake_ms_is_paid_once_per_new_connection(platform: SimulatedPlatform) -> None:
    faults(platform, "as-b", handshake_ms=600)
    url = platform.config.host("as-b").winrm.url
    address = url.split("//", 1)[1].split("/", 1)[0]
    conn = http.client.HTTPConnection(address, timeout=10)
    try:
        times = []
        for _ in range(2):
            started = time.monotonic()
            conn.request("POST", "/wsman", body=b"x", headers={"Content-Type": "application/soap+xml"})
            response = conn.getresponse()
            response.read()
            assert response.status == 401  # no credentials: refused, and the connection stays open
            times.append(time.monotonic() - started)
    finally:
        conn.close()
    assert times[0] >= 0.6
    assert times[1] < 0.5
    assert platform.connections("as-b") == 1


# --------------------------------------------------------------------------- MaxEnvelopeSizekb


def test_an_envelope_over_max_envelope_size_is_refused_as_windows_does(platform: SimulatedPlatform) -> None:
    proto = raw_client(platform, "ms-b1")
    shell = proto.open_shell(codepage=65001, noprofile=True)
    try:
        command = proto.run_command(
            shell, protocol.POWERSHELL, protocol.powershell_arguments(), console_mode_stdin=False
        )
        with pytest.raises(WSManFaultError) as fault:
            proto.send_command_input(shell, command, b"#" * 400_000, end=False)  # about 535 KB of base64
        assert fault.value.wsman_fault_code == 2150859025
        assert "MaxEnvelopeSize" in fault.value.reason
        faults(platform, "ms-b1", max_envelope_size_kb=150)
        with pytest.raises(WSManFaultError):
            proto.send_command_input(shell, command, b"#" * 120_000, end=False)  # 160 KB of base64
        proto.send_command_input(shell, command, b"#" * STDIN_CHUNK, end=False)  # the executor's piece fits
        proto.cleanup_command(shell, command)
    finally:
        proto.close_shell(shell)


@pytest.mark.parametrize(("limit_kb", "size", "receives"), [(500, 300_000, 5), (150, 80_000, 3)])
def test_a_large_settings_xml_is_replaced_and_read_back_whole(
    platform: SimulatedPlatform, limit_kb: int, size: int, receives: int
) -> None:
    """The file travels in stdin pieces that fit the host's limit, and comes back in several Receives."""
    faults(platform, "as-b", max_envelope_size_kb=limit_kb)
    host = platform.config.host("as-b")
    counter = RequestCounter()
    with WinRMExecutor(on_request=counter) as ex:
        current = remote.read_file(ex, host, SETTINGS)
        new = padded_settings(current.content, size)
        assert len(new) >= size
        assert remote.replace_file(ex, host, SETTINGS, new, current.sha256).changed
        sends = counter.actions["Send"]
        back = remote.read_file(ex, host, SETTINGS)
    assert local(platform, "as-b", SETTINGS).read_bytes() == new
    assert back.content == new
    assert sends >= 2
    # read, replace, read; 400 KB of base64 does not fit one 150 KB ReceiveResponse
    assert counter.actions["Receive"] >= receives


def test_stdin_goes_as_a_pipe_not_a_console(platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, bool]] = []
    original = Protocol.run_command

    def recording(self: Protocol, shell_id: str, command: str, arguments: Any = (), **kwargs: Any) -> str:
        seen.append((len(" ".join(arguments)), kwargs.get("console_mode_stdin", True)))
        return original(self, shell_id, command, arguments, **kwargs)

    monkeypatch.setattr(Protocol, "run_command", recording)
    host = platform.config.host("as-b")
    with WinRMExecutor() as ex:
        current = remote.read_file(ex, host, SETTINGS)
        remote.replace_file(ex, host, SETTINGS, padded_settings(current.content, 20_000), current.sha256)
    bootstrap = len(" ".join(protocol.powershell_arguments()))
    assert [console for length, console in seen if length == bootstrap] == [False]


# --------------------------------------------------------------------------- output as Windows sends it


def test_output_is_cut_into_pieces_and_inside_a_utf8_character() -> None:
    text = ('{"ok":false,"error":"Dienst \u00dcberwachung nicht gefunden"}\r\n' + "x" * 9000).encode()
    command = Command(id="C", codepage="65001")
    pieces = _pieces(command, ProcessResult(text, b"", 1))
    assert b"".join(data for name, data in pieces if name == "stdout") == text
    assert len(pieces) >= 3 and all(len(data) <= STREAM_PIECE for _, data in pieces)
    broken = []
    for _, data in pieces:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            broken.append(data)
    assert broken, "no piece ends inside a multi-byte character"


def test_output_is_in_the_shell_code_page(platform: SimulatedPlatform) -> None:
    """Without codepage=65001 a non-ASCII message arrives as '?' (cp437 has no 'ł'), as on Windows."""
    name = "Usługa-Überwachung"
    results = {}
    for codepage in (437, 65001):
        proto = raw_client(platform, "as-b")
        shell = proto.open_shell(codepage=codepage, noprofile=True)
        try:
            arguments, _ = protocol.command_arguments(protocol.render("service.query", {"service": name}))
            command = proto.run_command(shell, protocol.POWERSHELL, arguments)
            out = b""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stdout, _, _, done = proto.get_command_output_raw(shell, command)
                out += stdout
                if done:
                    break
            proto.cleanup_command(shell, command)
        finally:
            proto.close_shell(shell)
        results[codepage] = out
    assert name in protocol.parse_result(results[65001].decode("utf-8"))["error"]
    assert "Us?uga-" in results[437].decode("cp437")


def test_first_command_of_a_shell_reports_progress_on_stderr_and_still_succeeds(platform: SimulatedPlatform) -> None:
    proto = raw_client(platform, "ms-b1")
    shell = proto.open_shell(codepage=65001, noprofile=True)
    try:
        arguments, _ = protocol.command_arguments(protocol.render("host.info", {}))
        command = proto.run_command(shell, protocol.POWERSHELL, arguments)
        out, err, code = b"", b"", None
        while code is None:
            stdout, stderr, rc, done = proto.get_command_output_raw(shell, command)
            out, err = out + stdout, err + stderr
            code = rc if done else None
        proto.cleanup_command(shell, command)
    finally:
        proto.close_shell(shell)
    assert code == 0 and b"Preparing modules for first use." in err
    assert clixml_to_text(err) == ""
    assert protocol.parse_result(out.decode("utf-8"))["ok"] is True


def test_non_ascii_error_arrives_whole_through_the_executor(platform: SimulatedPlatform) -> None:
    with WinRMExecutor() as ex, pytest.raises(RemoteOperationFailed, match="Usługa-Überwachung"):
        remote.query_service(ex, platform.config.host("as-b"), "Usługa-Überwachung")


def test_a_result_line_after_a_byte_order_mark_is_read() -> None:
    assert protocol.parse_result('\ufeff{"ok":true,"state":"Running"}\r\n') == {"ok": True, "state": "Running"}


def test_sha256_of_large_read_matches(platform: SimulatedPlatform) -> None:
    path = local(platform, "as-b", SETTINGS)
    path.write_bytes(padded_settings(path.read_bytes(), 250_000))
    with WinRMExecutor() as ex:
        content = remote.read_file(ex, platform.config.host("as-b"), SETTINGS)
    assert content.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert base64.b64encode(content.content) == base64.b64encode(path.read_bytes())
