"""Opt-in: the real PowerShell templates against a real Windows host (FAILOVER_TEST_WINRM_URL and credentials).

Only read-only operations touch the system; the file tests work on a uniquely named scratch file in a temp
folder (``FAILOVER_TEST_WINRM_TEMP``, default ``C:\\Windows\\Temp``) and leave it and its backup behind. The
service tests register a scratch service with sc.exe (an administrator account) and delete it afterwards.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from actions import remote
from actions.winrm import WinRMExecutor
from bot.config import Host, WinRMEndpoint
from bot.errors import RemoteOperationFailed

URL = os.environ.get("FAILOVER_TEST_WINRM_URL")

pytestmark = [
    pytest.mark.windows,
    pytest.mark.skipif(not URL, reason="FAILOVER_TEST_WINRM_URL not set (no real Windows host to test against)"),
]


@pytest.fixture(scope="module")
def host() -> Host:
    assert URL
    if not os.environ.get("FAILOVER_TEST_WINRM_USER") or not os.environ.get("FAILOVER_TEST_WINRM_PASSWORD"):
        pytest.fail("FAILOVER_TEST_WINRM_URL is set but FAILOVER_TEST_WINRM_USER / _PASSWORD are not")
    endpoint = WinRMEndpoint(
        url=URL,
        transport=os.environ.get("FAILOVER_TEST_WINRM_TRANSPORT", "ntlm"),
        username_env="FAILOVER_TEST_WINRM_USER",
        password_env="FAILOVER_TEST_WINRM_PASSWORD",
        cert_pem=None,
        cert_key_pem=None,
        server_cert_validation=os.environ.get("FAILOVER_TEST_WINRM_CERT_VALIDATION", "validate"),
        ca_trust_path=os.environ.get("FAILOVER_TEST_WINRM_CA"),
        message_encryption="auto",
        operation_timeout_s=20,
        read_timeout_s=30,
        command_timeout_s=120,
    )
    return Host(name="windows-test", site="test", role="account_server", address="", port=443, winrm=endpoint)


@pytest.fixture(scope="module")
def ex() -> Iterator[WinRMExecutor]:
    with WinRMExecutor() as executor:
        yield executor


@pytest.fixture(scope="module")
def temp_folder() -> str:
    return os.environ.get("FAILOVER_TEST_WINRM_TEMP", r"C:\Windows\Temp")


def test_host_info(ex: WinRMExecutor, host: Host) -> None:
    info = remote.host_info(ex, host)
    assert info.hostname
    assert info.ps_version[0].isdigit()


def test_query_winrm_service_is_running(ex: WinRMExecutor, host: Host) -> None:
    assert remote.query_service(ex, host, "WinRM") == "Running"


def test_unknown_and_wildcard_service_names_are_refused(ex: WinRMExecutor, host: Host) -> None:
    with pytest.raises(RemoteOperationFailed):
        remote.query_service(ex, host, f"NoSuchService{uuid.uuid4().hex[:8]}")
    with pytest.raises(RemoteOperationFailed, match="wildcard"):
        remote.query_service(ex, host, "Win*")


def test_path_test(ex: WinRMExecutor, host: Host) -> None:
    assert remote.path_exists(ex, host, "C:\\Windows") == (True, True)
    assert remote.path_exists(ex, host, f"C:\\Windows\\no-such-{uuid.uuid4().hex}") == (False, False)
    assert remote.read_file(ex, host, f"C:\\Windows\\no-such-{uuid.uuid4().hex}").exists is False


def test_scratch_file_create_replace_read(ex: WinRMExecutor, host: Host, temp_folder: str) -> None:
    name = f"failover-bot-test-{uuid.uuid4().hex}.txt"
    path = f"{temp_folder}\\{name}"
    drop = remote.drop_task_file(ex, host, temp_folder, name)
    assert (drop.created, drop.already_waiting) == (True, False)
    assert remote.drop_task_file(ex, host, temp_folder, name).already_waiting is True
    assert remote.task_file_waiting(ex, host, temp_folder, name) is True

    empty = remote.read_file(ex, host, path)
    assert (empty.exists, empty.content) == (True, b"")
    content = "\ufeff<Settings>\r\n  <IsSlave>True</IsSlave>\r\n  <Name>caf\u00e9</Name>\r\n</Settings>\r\n".encode()
    replaced = remote.replace_file(ex, host, path, content, empty.sha256)
    assert replaced.changed and replaced.backup_path and replaced.backup_path.endswith(".bak")
    read = remote.read_file(ex, host, path)
    assert read.content == content
    assert read.sha256 == remote.sha256_hex(content)
    assert remote.read_file(ex, host, replaced.backup_path).content == b""
    assert remote.replace_file(ex, host, path, content, empty.sha256).changed is False
    with pytest.raises(RemoteOperationFailed, match="changed since it was read"):
        remote.replace_file(ex, host, path, b"other", empty.sha256)
    assert remote.read_file(ex, host, path).content == content


# --------------------------------------------------------------------------- issue 15 on a real host
# These need an administrator account (sc.exe, a scratch service) and leave nothing behind but scratch files.


def _raw(host: Host, command: str, *arguments: str) -> tuple[int, str, str]:
    """Run ``command`` on the host through plain pywinrm (test set-up only, never the bot's route)."""
    from winrm.protocol import Protocol

    from actions.winrm import _transport_settings

    proto = Protocol(**_transport_settings(host))
    shell = proto.open_shell(codepage=65001, noprofile=True)
    try:
        command_id = proto.run_command(shell, command, list(arguments))
        out, err, code = proto.get_command_output(shell, command_id)
        proto.cleanup_command(shell, command_id)
    finally:
        proto.close_shell(shell)
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


@pytest.fixture
def scratch_service(host: Host) -> Iterator[str]:
    """A service registered with sc.exe whose program never talks to the service manager: it stays in
    StartPending for about 30 s after a start, then fails (1053)."""
    name = f"FailoverBotTest{uuid.uuid4().hex[:8]}"
    code, out, err = _raw(
        host,
        "sc.exe",
        "create",
        name,
        "binPath=",
        "C:\\Windows\\System32\\cmd.exe /c ping -n 600 127.0.0.1",
        "start=",
        "demand",
    )
    assert code == 0, out + err
    try:
        yield name
    finally:
        _raw(host, "sc.exe", "stop", name)
        _raw(host, "sc.exe", "delete", name)


def test_preflight_goes_over_stdin_and_reports_the_limit(ex: WinRMExecutor, host: Host, temp_folder: str) -> None:
    info = remote.host_info(ex, host)
    assert info.language_mode == "FullLanguage"
    pre = remote.preflight(ex, host, "WinRM", f"{temp_folder}\\no-such-{uuid.uuid4().hex}.xml")
    assert pre.service == "WinRM" and pre.settings_size is None
    assert pre.max_envelope_size_kb is None or pre.max_envelope_size_kb >= 150


def test_a_300_kb_replace_goes_in_pieces(ex: WinRMExecutor, host: Host, temp_folder: str) -> None:
    name = f"failover-bot-test-{uuid.uuid4().hex}.xml"
    assert remote.drop_task_file(ex, host, temp_folder, name).created
    path = f"{temp_folder}\\{name}"
    empty = remote.read_file(ex, host, path)
    content = b"<Settings>\r\n" + ("<!-- caf\u00e9 \u0142 -->\r\n" * 15_000).encode() + b"</Settings>\r\n"
    assert len(content) > 300_000
    assert remote.replace_file(ex, host, path, content, empty.sha256).changed
    assert remote.read_file(ex, host, path).content == content


def test_a_disabled_service_is_refused_by_its_start_type(ex: WinRMExecutor, host: Host, scratch_service: str) -> None:
    code, out, err = _raw(host, "sc.exe", "config", scratch_service, "start=", "disabled")
    assert code == 0, out + err
    with pytest.raises(RemoteOperationFailed, match=r"is Disabled \(its start type\)"):
        remote.start_service(ex, host, scratch_service, 5)


def test_a_service_stuck_in_a_pending_state(ex: WinRMExecutor, host: Host, scratch_service: str) -> None:
    """StartPending for ~30 s: start reports where it is stuck; stop waits for it rather than failing with 1061.

    (StopPending needs a program that hangs on stop; a cmd.exe service gives StartPending, the same wait.)"""
    with pytest.raises(RemoteOperationFailed, match="stuck in StartPending"):
        remote.start_service(ex, host, scratch_service, 3)
    with pytest.raises(RemoteOperationFailed) as stop:
        remote.stop_service(ex, host, scratch_service, 3)
    assert "1061" not in str(stop.value)  # it waited, it did not hit 'cannot accept control messages'
    assert "stuck in StartPending" in str(stop.value) or "Win32 error 1053" in str(stop.value)


def test_a_locked_temporary_file_never_loses_the_target(ex: WinRMExecutor, host: Host, temp_folder: str) -> None:
    """A background process opens every fresh *.tmp beside the target without sharing (as a virus scanner
    may): the replace fails or succeeds, but the target is never missing and the message says what is left."""
    name = f"failover-bot-test-{uuid.uuid4().hex}.xml"
    assert remote.drop_task_file(ex, host, temp_folder, name).created
    path = f"{temp_folder}\\{name}"
    empty = remote.read_file(ex, host, path)
    locker = (
        f"$w = New-Object IO.FileSystemWatcher '{temp_folder}', '{name}.*.tmp'; "
        "$e = $w.WaitForChanged('Created', 60000); "
        f"if (-not $e.TimedOut) {{ $h = [IO.File]::Open('{temp_folder}\\' + $e.Name, 'Open', 'Read', 'None'); "
        "Start-Sleep -Seconds 20; $h.Dispose() }"
    )
    background = threading.Thread(target=_raw, args=(host, "powershell.exe", "-NoProfile", "-Command", locker))
    background.start()
    try:
        time.sleep(3)  # the watcher is listening
        try:
            remote.replace_file(ex, host, path, b"<Settings/>\r\n", empty.sha256)
        except RemoteOperationFailed as exc:
            assert "is unchanged" in str(exc) or "temporary file" in str(exc)
        assert remote.read_file(ex, host, path).exists
    finally:
        background.join(90)
