"""Opt-in: the real PowerShell templates against a real Windows host (FAILOVER_TEST_WINRM_URL and credentials).

Only read-only operations touch the system; the file tests work on a uniquely named scratch file in a temp
folder (``FAILOVER_TEST_WINRM_TEMP``, default ``C:\\Windows\\Temp``) and leave it and its backup behind.
"""

from __future__ import annotations

import os
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
