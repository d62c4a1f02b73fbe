"""Replies recorded from real Windows servers: the simulator's replies have their structure, and our receive
and result parsing read them.

Recorded data, not code: ``tests/data/pypsrp/*.yml`` are pypsrp's ``tests/tests_pypsrp/responses``
(``test_winrs_*``, ``test_wsman_update_envelope_size_*``; MIT, Copyright (c) 2018 Jordan Borean, Red Hat;
``tests/data/pypsrp/LICENSE``), ``tests/data/pywinrm/clixml_*.txt`` the CLIXML samples in pywinrm 0.5.0's
``winrm/tests/test_session.py`` (MIT, Copyright (c) 2013 Alexey Diyan; ``tests/data/pywinrm/LICENSE``).
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from winrm.exceptions import WinRMTransportError
from winrm.protocol import Protocol

from actions.winrm import WinRMExecutor, clixml_to_text
from bot.config import Host
from bot.errors import RemoteOperationFailed
from sandbox.simulator import SimulatedPlatform
from sandbox.simulator.wsman import WSManService
from tests.support.platform import running_platform, write_config

DATA = Path(__file__).parent / "data"
RECORDED = sorted((DATA / "pypsrp").glob("test_winrs_*.yml"))
ENVELOPE_SIZE = sorted((DATA / "pypsrp").glob("test_wsman_update_envelope_size_*.yml"))
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"
# Headers Windows adds that a client never needs (a trace id).
OPTIONAL_HEADERS = {"{http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd}ActivityId"}


def _exchanges(path: Path) -> list[tuple[str, str, str]]:
    """(action, request, response) of a recorded file."""
    out = []
    for message in yaml.safe_load(path.read_text(encoding="utf-8"))["messages"]:
        action = re.search(r"<\w+:Action[^>]*>[^<]*/(\w+)</", message["request"])
        assert action, path
        out.append((action.group(1), message["request"], message["response"]))
    return out


def _kind(response: str) -> str:
    """CreateResponse, ReceiveResponse, … or Fault/<wsman code>."""
    root = ET.fromstring(response)
    fault = root.find(f"{SOAP}Body/{SOAP}Fault")
    if fault is not None:
        code = re.search(r'Code="(\d+)"', response)
        return "Fault/" + (code.group(1) if code else "?")
    action = root.findtext(f"{SOAP}Header/{{http://schemas.xmlsoap.org/ws/2004/08/addressing}}Action") or ""
    return action.rsplit("/", 1)[-1]


def _shape(response: str | bytes) -> tuple[frozenset[str], frozenset[str]]:
    """(header element names, every element path with its attribute names under Body) — no values."""
    root = ET.fromstring(response)
    header = frozenset(child.tag for child in root.find(f"{SOAP}Header") or []) - OPTIONAL_HEADERS
    paths: set[str] = set()

    def walk(node: ET.Element, prefix: str) -> None:
        here = f"{prefix}/{node.tag}[{','.join(sorted(a for a in node.attrib if a != 'Machine'))}]"
        paths.add(here)
        for child in node:
            walk(child, here)

    body = root.find(f"{SOAP}Body")
    assert body is not None
    for child in body:
        walk(child, "")
    return header, frozenset(paths)


def _recorded_shapes() -> dict[str, set[frozenset[str]]]:
    shapes: dict[str, set[frozenset[str]]] = {}
    for path in RECORDED:
        for _, _, response in _exchanges(path):
            shapes.setdefault(_kind(response), set()).add(_shape(response)[1])
    return shapes


# --------------------------------------------------------------------------- the simulator answers like Windows


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[SimulatedPlatform]:
    with running_platform(write_config(tmp_path / "config"), tmp_path / "state") as started:
        yield started


def test_the_recorded_data_is_here_with_its_licence() -> None:
    assert len(RECORDED) >= 10 and len(ENVELOPE_SIZE) == 3
    assert "MIT License" in (DATA / "pypsrp" / "LICENSE").read_text(encoding="utf-8")
    assert "Permission is hereby granted" in (DATA / "pywinrm" / "LICENSE").read_text(encoding="utf-8")


def test_simulator_replies_have_the_structure_of_recorded_windows_replies(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies: list[tuple[int, bytes]] = []
    handle = WSManService.handle

    def recording(self: WSManService, body: bytes) -> tuple[int, bytes]:
        status, reply = handle(self, body)
        replies.append((status, reply))
        return status, reply

    monkeypatch.setattr(WSManService, "handle", recording)
    host = platform.config.host("ss-a1")
    with WinRMExecutor() as ex:
        from actions import remote

        remote.query_service(ex, host, "Attix5ProStorageServer")
        current = remote.read_file(ex, host, r"C:\ProgramData\Attix5 Pro\SS_Service\Settings.xml")
        new = current.content.replace(b"</Settings>", b"<!-- x -->\r\n</Settings>")
        remote.replace_file(ex, host, r"C:\ProgramData\Attix5 Pro\SS_Service\Settings.xml", new, current.sha256)
        (platform.host_dir("ss-a1") / "faults.json").write_text('{"timeout_faults": 1}', encoding="utf-8")
        remote.query_service(ex, host, "Attix5ProStorageServer")
    recorded = _recorded_shapes()
    kinds = {_kind(reply.decode()) for _, reply in replies}
    assert {"CreateResponse", "CommandResponse", "SendResponse", "ReceiveResponse", "SignalResponse"} <= kinds
    assert "DeleteResponse" in kinds and "Fault/2150858793" in kinds
    for status, reply in replies:
        kind = _kind(reply.decode())
        header, body = _shape(reply)
        assert {"Action", "MessageID", "RelatesTo", "To"} <= {tag.rsplit("}", 1)[-1] for tag in header}, kind
        assert status == (500 if kind.startswith("Fault/") else 200)
        assert kind in recorded, f"Windows was never recorded answering {kind}"
        # Every element the simulator sends, Windows sends in that place with those attributes.
        allowed = frozenset().union(*recorded[kind])
        assert body <= allowed, (kind, sorted(body - allowed))
    # and a whole ReceiveResponse that ends a command looks like one Windows sent
    done = [_shape(r)[1] for _, r in replies if b"CommandState/Done" in r]
    assert any(shape in recorded["ReceiveResponse"] for shape in done)


def test_max_envelope_size_defaults_match_the_recorded_configurations() -> None:
    from sandbox.simulator.host_state import DEFAULT_MAX_ENVELOPE_KB

    sizes = {}
    for path in ENVELOPE_SIZE:
        response = _exchanges(path)[0][2]
        sizes[path.stem.rsplit("_", 1)[1]] = int(re.search(r"MaxEnvelopeSizekb>(\d+)<", response).group(1))  # type: ignore[union-attr]
    assert sizes == {"150": 150, "500": 500, "4096": 4096}
    assert DEFAULT_MAX_ENVELOPE_KB == 500


# --------------------------------------------------------------------------- recorded replies through our parsing


def _replaying(path: Path) -> tuple[Protocol, str, str]:
    """A pywinrm Protocol whose transport answers with the recorded replies of ``path``, in order."""
    exchanges = _exchanges(path)
    answers = iter(response for _, _, response in exchanges)
    proto = Protocol(
        "http://192.0.2.1:5985/wsman",
        transport="basic",
        username="u",
        password="p",
        message_encryption="never",
        proxy=None,
        ca_trust_path=None,  # type: ignore[arg-type]
    )

    def send_message(message: Any) -> bytes:
        response = next(answers)
        if _kind(response).startswith("Fault/"):
            raise WinRMTransportError("http", 500, response)
        return response.encode("utf-8")

    proto.transport.send_message = send_message  # type: ignore[method-assign]
    shell_id = proto.open_shell()
    command_id = proto.run_command(shell_id, "powershell.exe", ["recorded"])
    return proto, shell_id, command_id


def _host() -> Host:
    from bot.config import load_config
    from tests.support.paths import EXAMPLE_CONFIG

    return load_config(EXAMPLE_CONFIG).host("as-a")


def test_our_receive_loop_reads_a_recorded_operation_timeout_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output, then 'Running', two operation-timeout faults, then Done: as Windows answered a slow command."""
    monkeypatch.setattr("actions.winrm.RECEIVE_PAUSE_S", 0.0)
    proto, shell_id, command_id = _replaying(DATA / "pypsrp" / "test_winrs_operation_timeout.yml")
    rc, out, err = WinRMExecutor()._receive(_host(), proto, shell_id, command_id, "recorded", time.monotonic() + 30, 30)
    assert (rc, out, err) == (0, b"hi\nhi again\n", b"")


def test_our_result_parsing_reads_recorded_stderr_and_exit_code() -> None:
    proto, shell_id, command_id = _replaying(DATA / "pypsrp" / "test_winrs_stderr_rc.yml")
    rc, out, err = WinRMExecutor()._receive(_host(), proto, shell_id, command_id, "recorded", time.monotonic() + 30, 30)
    assert (rc, out, err) == (1, b"out \r\n", b"err \r\n")
    with pytest.raises(RemoteOperationFailed, match="recorded failed: err$"):
        WinRMExecutor._result(_host(), "recorded", rc, out, err)


def test_recorded_unicode_output_is_read_whole() -> None:
    proto, shell_id, command_id = _replaying(DATA / "pypsrp" / "test_winrs_unicode.yml")
    rc, out, _ = WinRMExecutor()._receive(_host(), proto, shell_id, command_id, "recorded", time.monotonic() + 30, 30)
    assert rc == 0 and out.decode("utf-8") == "\u3053\u3093\u306b\u3061\u306f\n"


def test_recorded_clixml_error_and_progress() -> None:
    error = (DATA / "pywinrm" / "clixml_error_with_progress.txt").read_bytes()
    text = clixml_to_text(error)
    assert text.startswith("fake : The term 'fake' is not recognized as the name of a cmdlet")
    assert "Preparing modules" not in text and "_x000D_" not in text
    assert "CommandNotFoundException" in text
    assert clixml_to_text((DATA / "pywinrm" / "clixml_progress_only.txt").read_bytes()) == ""
