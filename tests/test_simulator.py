"""The simulated platform, driven over real WinRM with pywinrm's own Protocol."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyodbc
import pytest
import requests
import yaml
from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WSManFaultError
from winrm.protocol import Protocol

from actions import protocol
from bot.config import load_config
from bot.errors import ConfigError
from sandbox.simulator import SimulatedPlatform, read_operations
from tests.support.paths import EXAMPLE_CONFIG, ROOT
from tests.support.platform import running_platform, write_config

DATA_ROOT = r"C:\ProgramData\Attix5 Pro"
AS_SETTINGS = DATA_ROOT + r"\AS_Service\Settings.xml"
SS_SETTINGS = DATA_ROOT + r"\SS_Service\Settings.xml"
TASK_QUEUE = DATA_ROOT + r"\AS_Service\TaskQueue"
TASK = "Failover.UpdateSettingsOnSS"
AS_SERVICE = "Attix5ProAccountServer"
SS_SERVICE = "Attix5ProStorageServer"
DEADLINE_S = 20.0


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[SimulatedPlatform]:
    with running_platform(write_config(tmp_path / "config"), tmp_path / "state") as started:
        yield started


def script(op: str, data: dict[str, Any]) -> str:
    """The rendered template; a minimal stand-in with the same header and data line if it is absent."""
    try:
        return protocol.render(op, data)
    except (protocol.ProtocolError, OSError):
        return f"# op: {op}\n$DataB64 = '{protocol.encode_data(data)}'\n"


def client(platform: SimulatedPlatform, host: str, password: str | None = None) -> Protocol:
    return Protocol(
        platform.config.host(host).winrm.url,
        transport="basic",
        username=os.environ["FAILOVER_WINRM_USER"],
        password=os.environ["FAILOVER_WINRM_PASSWORD"] if password is None else password,
        message_encryption="never",
        proxy=None,
        ca_trust_path=None,  # type: ignore[arg-type]  # None: no CA bundles from the environment
        operation_timeout_sec=5,
        read_timeout_sec=10,
    )


def receive(proto: Protocol, shell: str, command: str) -> tuple[bytes, bytes, int]:
    deadline = time.monotonic() + DEADLINE_S
    out, err = b"", b""
    while time.monotonic() < deadline:
        try:
            stdout, stderr, code, done = proto.get_command_output_raw(shell, command)
        except WinRMOperationTimeoutError:
            continue
        out, err = out + stdout, err + stderr
        if done:
            return out, err, code
    raise AssertionError("the command did not finish before the deadline")


def execute(
    platform: SimulatedPlatform,
    host: str,
    stdin: str,
    *,
    command: str = protocol.POWERSHELL,
    arguments: list[str] | None = None,
    chunks: int = 1,
) -> tuple[str, str, int]:
    """Run one command the way the executor does: shell, command, stdin, receive, signal, delete."""
    proto = client(platform, host)
    shell = proto.open_shell(codepage=65001, noprofile=True)
    try:
        cmd = proto.run_command(shell, command, protocol.powershell_arguments() if arguments is None else arguments)
        data = stdin.encode("utf-8")
        size = max(1, -(-len(data) // chunks))
        pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for i, piece in enumerate(pieces):
            proto.send_command_input(shell, cmd, piece, end=i == len(pieces) - 1)
        out, err, code = receive(proto, shell, cmd)
        proto.cleanup_command(shell, cmd)
    finally:
        proto.close_shell(shell)
    return out.decode("utf-8"), err.decode("utf-8"), code


def op(platform: SimulatedPlatform, host: str, operation: str, /, **data: Any) -> tuple[dict[str, Any], int]:
    out, _, code = execute(platform, host, script(operation, data))
    return protocol.parse_result(out), code


def local(platform: SimulatedPlatform, host: str, windows_path: str) -> Path:
    return platform.host_dir(host) / "C" / Path(*windows_path[3:].split("\\"))


def rows(platform: SimulatedPlatform, site: str = "site-b") -> dict[str, dict[str, Any]]:
    with sqlite3.connect(platform.database(site).path) as db:
        db.row_factory = sqlite3.Row
        return {r["Name"]: dict(r) for r in db.execute('SELECT * FROM "BackupServer"')}


def set_faults(platform: SimulatedPlatform, host: str, **faults: Any) -> None:
    (platform.host_dir(host) / "faults.json").write_text(json.dumps(faults), encoding="utf-8")


def services(platform: SimulatedPlatform, host: str) -> dict[str, str]:
    return json.loads((platform.host_dir(host) / "services.json").read_text(encoding="utf-8"))


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def operations(platform: SimulatedPlatform, name: str) -> list[dict[str, Any]]:
    return [entry for entry in read_operations(platform.state_dir) if entry["operation"] == name]


def settings_text(platform: SimulatedPlatform, host: str, path: str = AS_SETTINGS) -> str:
    return local(platform, host, path).read_bytes().decode("utf-8-sig")


# --------------------------------------------------------------------------- seeding


def test_seeding_creates_a_healthy_platform_before_any_failover(platform: SimulatedPlatform) -> None:
    guids = set()
    for host, path in [("as-a", AS_SETTINGS), ("as-b", AS_SETTINGS)] + [
        (name, SS_SETTINGS) for name in ("ss-a1", "ss-a2", "ms-b1", "ms-b2")
    ]:
        raw = local(platform, host, path).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf<?xml")
        assert raw.count(b"\n") == raw.count(b"\r\n") > 5
        text = raw.decode("utf-8-sig")
        assert f"<ServerName>{host}</ServerName>" in text
        guids.add(text.split("<ServerGuid>")[1].split("<")[0])
    assert len(guids) == 6
    assert "IsSlave" not in settings_text(platform, "as-a")
    assert '<IsSlave choices="True,False" default="False">True</IsSlave>' in settings_text(platform, "as-b")
    assert services(platform, "as-a") == {AS_SERVICE: "Running"}
    assert services(platform, "ms-b2") == {SS_SERVICE: "Running"}
    assert local(platform, "as-a", TASK_QUEUE).is_dir() and local(platform, "as-b", TASK_QUEUE).is_dir()

    table = rows(platform)
    assert {name: r["Role"] for name, r in table.items()} == {
        "as-a": "MasterAccountServer",
        "ss-a1": "StorageServer",
        "ss-a2": "StorageServer",
        "as-b": "SlaveAccountServer",
        "ms-b1": "MirrorServer",
        "ms-b2": "MirrorServer",
    }
    assert table["ss-a2"]["IP"] == "127.0.10.22" and table["ss-a2"]["Port"] == 8443
    assert all(r["OnLine"] == 1 for r in table.values())
    assert table["as-b"]["ServerGUID"] in settings_text(platform, "as-b")


def test_the_database_is_readable_through_the_sqlite_odbc_driver(platform: SimulatedPlatform) -> None:
    line_a, line_b = platform.env_lines()
    assert line_a.startswith("FAILOVER_ODBC_SITE_A=") and str(platform.database("site-a").path) in line_a
    name, _, connection_string = line_b.partition("=")
    assert name == "FAILOVER_ODBC_SITE_B" and str(platform.database("site-b").path) in connection_string
    assert platform.database("site-b").path.name == "StoragePlatform.site-b.db"
    assert "PASSWORD" not in (line_a + line_b).upper()
    conn = pyodbc.connect(connection_string)
    try:
        found = conn.cursor().execute('SELECT "Name", "Role", "OnLine" FROM "BackupServer" ORDER BY "Name"').fetchall()
    finally:
        conn.close()
    assert [(r[0], r[1], int(r[2])) for r in found][:2] == [
        ("as-a", "MasterAccountServer", 1),
        ("as-b", "SlaveAccountServer", 1),
    ]


def test_existing_files_are_left_alone_on_restart(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "config")
    state = tmp_path / "state"
    with running_platform(config_path, state) as first:
        settings = local(first, "as-a", AS_SETTINGS)
        settings.write_bytes(b"\xef\xbb\xbf<Settings><ServerGuid>{ABC}</ServerGuid></Settings>\r\n")
        (first.host_dir("ss-a1") / "services.json").write_text('{"Attix5ProStorageServer": "Stopped"}')
        before = rows(first)
    with running_platform(config_path, state) as second:
        assert settings.read_bytes() == b"\xef\xbb\xbf<Settings><ServerGuid>{ABC}</ServerGuid></Settings>\r\n"
        assert services(second, "ss-a1") == {SS_SERVICE: "Stopped"}
        assert rows(second) == before


# --------------------------------------------------------------------------- operations


def test_host_info_and_services(platform: SimulatedPlatform) -> None:
    info, code = op(platform, "ss-a1", "host.info")
    assert code == 0 and info["hostname"] == "SS-A1" and info["ps_version"].startswith("5.1")

    result, code = op(platform, "ss-a1", "service.query", service="attix5prostorageserver")
    assert (code, result) == (0, {"ok": True, "service": SS_SERVICE, "state": "Running"})
    result, code = op(platform, "ss-a1", "service.stop", service=SS_SERVICE, timeout_s=5)
    assert (code, result["state"], result["changed"]) == (0, "Stopped", True)
    assert services(platform, "ss-a1")[SS_SERVICE] == "Stopped"
    result, _ = op(platform, "ss-a1", "service.stop", service=SS_SERVICE, timeout_s=5)
    assert (result["state"], result["changed"]) == ("Stopped", False)
    result, _ = op(platform, "ss-a1", "service.start", service=SS_SERVICE, timeout_s=5)
    assert (result["state"], result["changed"]) == ("Running", True)
    result, code = op(platform, "ss-a1", "service.restart", service=SS_SERVICE, timeout_s=5)
    assert (code, result["state"]) == (0, "Running")

    logged = [(e["operation"], e.get("changed")) for e in read_operations(platform.state_dir) if e["host"] == "ss-a1"]
    assert logged == [
        ("host.info", None),
        ("service.query", None),
        ("service.stop", True),
        ("service.stop", False),
        ("service.start", True),
        ("service.restart", True),
    ]
    entry = read_operations(platform.state_dir)[-1]
    assert set(entry) >= {"time", "host", "operation", "target", "outcome"}
    assert entry["target"] == SS_SERVICE and entry["outcome"] == "ok"


@pytest.mark.parametrize("name", ["Attix5Pro*", "Attix5Pro?torageServer", "NoSuchService"])
def test_a_service_name_must_match_exactly_one_service(platform: SimulatedPlatform, name: str) -> None:
    result, code = op(platform, "ss-a1", "service.stop", service=name, timeout_s=1)
    assert code == 1 and result["ok"] is False and name in result["error"]
    assert services(platform, "ss-a1")[SS_SERVICE] == "Running"
    assert read_operations(platform.state_dir)[-1]["outcome"] == "failed"


def test_file_read_replace_with_backup_and_case_insensitive_paths(platform: SimulatedPlatform) -> None:
    settings = local(platform, "as-b", AS_SETTINGS)
    original = settings.read_bytes()
    path = r"c:\PROGRAMDATA\attix5 pro\as_service\SETTINGS.XML"
    read, code = op(platform, "as-b", "file.read", path=path)
    assert code == 0 and read["exists"] is True
    assert base64.b64decode(read["content_b64"]) == original
    assert read["sha256"] == hashlib.sha256(original).hexdigest()

    new = original.replace(b">True</IsSlave>", b">False</IsSlave>")
    backup = DATA_ROOT + r"\AS_Service\Settings.xml.20240101T000000Z.bak"
    wanted = hashlib.sha256(new).hexdigest()
    data = {"path": path, "content_b64": base64.b64encode(new).decode(), "sha256": wanted, "backup_path": backup}

    stale, code = op(platform, "as-b", "file.replace", expected_sha256="0" * 64, **data)
    assert code == 1 and "changed since it was read" in stale["error"]
    assert settings.read_bytes() == original

    wrong = dict(data, sha256="f" * 64)
    bad, code = op(platform, "as-b", "file.replace", expected_sha256=read["sha256"], **wrong)
    assert code == 1 and "content check failed" in bad["error"]
    assert settings.read_bytes() == original

    done, code = op(platform, "as-b", "file.replace", expected_sha256=read["sha256"], **data)
    assert code == 0 and done["changed"] is True and done["backup_path"] == backup
    assert settings.read_bytes() == new
    assert local(platform, "as-b", backup).read_bytes() == original
    assert sorted(p.name for p in settings.parent.iterdir()) == [
        "Settings.xml",
        "Settings.xml.20240101T000000Z.bak",
        "TaskQueue",
    ]

    again, code = op(platform, "as-b", "file.replace", expected_sha256=read["sha256"], **data)
    assert code == 0 and again["changed"] is False and again["backup_path"] is None

    missing, code = op(platform, "as-b", "file.read", path=r"C:\nowhere\file.txt")
    assert code == 0 and missing["exists"] is False
    assert [e["outcome"] for e in operations(platform, "file.replace")] == ["failed", "failed", "ok", "ok"]


def test_a_failed_replace_leaves_no_half_written_file(platform: SimulatedPlatform) -> None:
    settings = local(platform, "ss-a1", SS_SETTINGS)
    original = settings.read_bytes()
    new = original.replace(b"50</Max", b"60</Max")
    result, code = op(
        platform,
        "ss-a1",
        "file.replace",
        path=SS_SETTINGS,
        content_b64=base64.b64encode(new).decode(),
        sha256=hashlib.sha256(new).hexdigest(),
        expected_sha256=hashlib.sha256(original).hexdigest(),
        backup_path=r"C:\no such folder\Settings.xml.bak",
    )
    assert code == 1 and result["ok"] is False and result["error"]
    assert settings.read_bytes() == original
    assert [p.name for p in settings.parent.iterdir()] == ["Settings.xml"]


def test_path_test(platform: SimulatedPlatform) -> None:
    folder, _ = op(platform, "as-a", "path.test", path=TASK_QUEUE.upper())
    assert (folder["exists"], folder["is_dir"]) == (True, True)
    file, _ = op(platform, "as-a", "path.test", path=AS_SETTINGS)
    assert (file["exists"], file["is_dir"]) == (True, False)
    nothing, _ = op(platform, "as-a", "path.test", path=r"C:\Missing")
    assert (nothing["exists"], nothing["is_dir"]) == (False, False)
    relative, code = op(platform, "as-a", "path.test", path=r"..\outside")
    assert code == 1 and "not an absolute path" in relative["error"]


def test_changes_made_to_files_while_running_are_honoured(platform: SimulatedPlatform) -> None:
    (platform.host_dir("ms-b1") / "services.json").write_text(json.dumps({SS_SERVICE: "Paused"}))
    result, _ = op(platform, "ms-b1", "service.query", service=SS_SERVICE)
    assert result["state"] == "Paused"


# --------------------------------------------------------------------------- task queue and AccountServers


def test_a_running_master_consumes_the_task_file_and_a_slave_leaves_it(platform: SimulatedPlatform) -> None:
    dropped, code = op(platform, "as-b", "taskqueue.drop", folder=TASK_QUEUE, name=TASK)
    assert code == 0 and (dropped["created"], dropped["already_waiting"]) == (True, False)
    assert dropped["path"] == TASK_QUEUE + "\\" + TASK
    time.sleep(1.0)
    status, _ = op(platform, "as-b", "taskqueue.status", folder=TASK_QUEUE, name=TASK)
    assert (status["folder_exists"], status["waiting"]) == (True, True)
    again, _ = op(platform, "as-b", "taskqueue.drop", folder=TASK_QUEUE, name=TASK)
    assert (again["created"], again["already_waiting"]) == (False, True)

    started = time.monotonic()
    master, _ = op(platform, "as-a", "taskqueue.drop", folder=TASK_QUEUE, name=TASK)
    assert master["created"] is True
    assert wait_for(lambda: not local(platform, "as-a", TASK_QUEUE + "\\" + TASK).exists(), timeout=3)
    assert time.monotonic() - started < 2.0
    consumed = operations(platform, "taskqueue.consume")
    assert [(e["host"], e["outcome"]) for e in consumed] == [("as-a", "ok")]
    assert local(platform, "as-b", TASK_QUEUE + "\\" + TASK).exists()


def test_a_stopped_master_leaves_the_task_file_waiting(platform: SimulatedPlatform) -> None:
    op(platform, "as-a", "service.stop", service=AS_SERVICE, timeout_s=5)
    op(platform, "as-a", "taskqueue.drop", folder=TASK_QUEUE, name=TASK)
    time.sleep(1.0)
    status, _ = op(platform, "as-a", "taskqueue.status", folder=TASK_QUEUE, name=TASK)
    assert status["waiting"] is True
    op(platform, "as-a", "service.start", service=AS_SERVICE, timeout_s=5)
    assert wait_for(lambda: not local(platform, "as-a", TASK_QUEUE + "\\" + TASK).exists())


def test_dropping_into_a_missing_task_queue_fails(platform: SimulatedPlatform) -> None:
    result, code = op(platform, "ss-a1", "taskqueue.drop", folder=TASK_QUEUE, name=TASK)
    assert code == 1 and "task queue folder not found" in result["error"]
    status, code = op(platform, "ss-a1", "taskqueue.status", folder=TASK_QUEUE, name=TASK)
    assert code == 0 and (status["folder_exists"], status["waiting"]) == (False, False)


def test_starting_a_promoted_slave_takes_over_the_backupserver_table(platform: SimulatedPlatform) -> None:
    slave_guid = rows(platform)["as-b"]["ServerGUID"]
    op(platform, "as-b", "service.stop", service=AS_SERVICE, timeout_s=5)
    settings = local(platform, "as-b", AS_SETTINGS)
    settings.write_bytes(settings.read_bytes().replace(b">True</IsSlave>", b">False</IsSlave>"))
    assert rows(platform)["as-b"]["Role"] == "SlaveAccountServer"
    result, code = op(platform, "as-b", "service.start", service=AS_SERVICE, timeout_s=5)
    assert code == 0 and result["state"] == "Running"
    table = rows(platform)
    assert (table["as-b"]["Role"], table["as-b"]["OnLine"], table["as-b"]["ServerGUID"]) == (
        "MasterAccountServer",
        1,
        slave_guid,
    )
    assert (table["as-a"]["Role"], table["as-a"]["OnLine"]) == ("SlaveAccountServer", 0)
    assert [e["host"] for e in operations(platform, "backupserver.promote")] == ["as-b"]

    # Restarting a Master that already owns the Master row changes nothing more.
    op(platform, "as-b", "service.restart", service=AS_SERVICE, timeout_s=5)
    assert rows(platform) == table


# --------------------------------------------------------------------------- protocol strictness


def test_stdin_may_arrive_in_several_chunks(platform: SimulatedPlatform) -> None:
    out, _, code = execute(platform, "ms-b2", script("service.query", {"service": SS_SERVICE}), chunks=4)
    assert code == 0 and protocol.parse_result(out)["state"] == "Running"


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        ("cmd.exe", ["/c", "whoami"]),
        ("powershell.exe", ["-NoProfile", "-EncodedCommand", protocol.encoded_bootstrap()]),
        ("powershell", None),
    ],
)
def test_any_other_command_line_fails_loudly(
    platform: SimulatedPlatform, command: str, arguments: list[str] | None
) -> None:
    stdin = script("service.stop", {"service": SS_SERVICE, "timeout_s": 5})
    out, err, code = execute(platform, "ss-a2", stdin, command=command, arguments=arguments)
    assert code == 1 and out == ""
    assert err.startswith("#< CLIXML\r\n") and '<S S="Error">' in err and "simulated platform" in err
    assert services(platform, "ss-a2")[SS_SERVICE] == "Running"
    assert operations(platform, "command.rejected")[-1]["host"] == "ss-a2"


@pytest.mark.parametrize(
    ("stdin", "reason"),
    [
        ("# op: disk.format\n$DataB64 = 'e30='\n", "unknown operation"),
        ("# op: service.query\n$DataB64 = 'bm90IGpzb24='\n", "not base64 JSON"),
        ("Stop-Service Attix5ProStorageServer\n", "header"),
    ],
)
def test_a_script_that_is_not_an_operation_fails_loudly(platform: SimulatedPlatform, stdin: str, reason: str) -> None:
    out, err, code = execute(platform, "ss-a2", stdin)
    assert code == 1 and out == ""
    assert err.startswith("#< CLIXML") and reason in err
    assert operations(platform, "script.rejected")[-1]["outcome"] == "failed"


def test_unknown_shell_is_a_windows_fault(platform: SimulatedPlatform) -> None:
    proto = client(platform, "as-a")
    with pytest.raises(WSManFaultError) as fault:
        proto.run_command("00000000-0000-0000-0000-000000000000", "powershell.exe", protocol.powershell_arguments())
    assert fault.value.code == 500 and fault.value.wsman_fault_code == 2150858843
    assert "shell was not found" in fault.value.reason


# --------------------------------------------------------------------------- faults.json


def test_refuse_makes_the_host_unreachable_until_cleared(platform: SimulatedPlatform) -> None:
    set_faults(platform, "as-a", refuse=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        client(platform, "as-a").open_shell(codepage=65001, noprofile=True)
    set_faults(platform, "as-a", refuse=False)
    result, code = op(platform, "as-a", "service.query", service=AS_SERVICE)
    assert code == 0 and result["state"] == "Running"


def test_reject_auth_and_wrong_passwords_are_invalid_credentials(platform: SimulatedPlatform) -> None:
    with pytest.raises(InvalidCredentialsError):
        client(platform, "ss-a1", password="wrong").open_shell()
    set_faults(platform, "ss-a1", reject_auth=True)
    with pytest.raises(InvalidCredentialsError):
        client(platform, "ss-a1").open_shell()


def test_timeout_faults_answer_the_next_receives_then_the_output(platform: SimulatedPlatform) -> None:
    proto = client(platform, "ms-b1")
    shell = proto.open_shell(codepage=65001, noprofile=True)
    try:
        cmd = proto.run_command(shell, protocol.POWERSHELL, protocol.powershell_arguments())
        proto.send_command_input(shell, cmd, script("service.query", {"service": SS_SERVICE}).encode(), end=True)
        set_faults(platform, "ms-b1", timeout_faults=2)
        for remaining in (1, 0):
            with pytest.raises(WinRMOperationTimeoutError):
                proto.get_command_output_raw(shell, cmd)
            assert json.loads((platform.host_dir("ms-b1") / "faults.json").read_text())["timeout_faults"] == remaining
        out, _, code, done = proto.get_command_output_raw(shell, cmd)
        assert done and code == 0 and protocol.parse_result(out.decode())["state"] == "Running"
        proto.cleanup_command(shell, cmd)
    finally:
        proto.close_shell(shell)


def test_latency_delays_every_request(platform: SimulatedPlatform) -> None:
    set_faults(platform, "ss-a2", latency_ms=300)
    started = time.monotonic()
    result, _ = op(platform, "ss-a2", "service.query", service=SS_SERVICE)
    # open, command, send, receive, signal, delete: six requests
    assert time.monotonic() - started >= 6 * 0.3 and result["state"] == "Running"


def test_a_stuck_service_stays_pending_and_stop_fails_after_its_timeout(platform: SimulatedPlatform) -> None:
    set_faults(platform, "ss-a1", stuck={SS_SERVICE: "StopPending"})
    query, _ = op(platform, "ss-a1", "service.query", service=SS_SERVICE)
    assert query["state"] == "StopPending"
    started = time.monotonic()
    result, code = op(platform, "ss-a1", "service.stop", service=SS_SERVICE, timeout_s=0.5)
    assert time.monotonic() - started >= 0.5
    assert code == 1 and "stuck in StopPending" in result["error"]
    set_faults(platform, "ss-a1")
    result, code = op(platform, "ss-a1", "service.stop", service=SS_SERVICE, timeout_s=0.5)
    assert code == 0 and result["state"] == "Stopped"


# --------------------------------------------------------------------------- configuration and the command line


def test_write_config_copies_the_example_platform_on_free_loopback_ports(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, winrm={"command_timeout_s": 7}))
    example = load_config(EXAMPLE_CONFIG)
    assert [(h.name, h.site, h.address, h.port) for h in config.hosts()] == [
        (h.name, h.site, h.address, h.port) for h in example.hosts()
    ]
    urls = [h.winrm.url for h in config.hosts()]
    assert len(set(urls)) == 6 and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert config.host("ms-b2").winrm.operation_timeout_s == 30
    assert config.host("as-a").winrm.command_timeout_s == 7


def test_missing_credential_variables_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_WINRM_USER", raising=False)
    monkeypatch.delenv("FAILOVER_WINRM_PASSWORD", raising=False)
    config = load_config(write_config(tmp_path))
    with pytest.raises(ConfigError) as error:
        SimulatedPlatform(config, tmp_path / "state").start()
    assert "FAILOVER_WINRM_USER" in str(error.value) and "FAILOVER_WINRM_PASSWORD" in str(error.value)
    assert not (tmp_path / "state").exists()


def test_only_loopback_addresses_are_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILOVER_WINRM_USER", "u")
    monkeypatch.setenv("FAILOVER_WINRM_PASSWORD", "p")
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["sites"]["site-a"]["account_server"]["winrm"] = "http://192.0.2.10:5985/wsman"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as error:
        SimulatedPlatform(load_config(path), tmp_path / "state").start()
    assert "sites.site-a.account_server.winrm" in str(error.value) and "loopback" in str(error.value)


def test_serve_forever_prints_the_environment_and_stops_on_sigterm(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "config")
    env = dict(os.environ, FAILOVER_WINRM_USER="u", FAILOVER_WINRM_PASSWORD="secret-value", PYTHONPATH=str(ROOT))
    code = (
        "import sys; from pathlib import Path; from bot.config import load_config; "
        "from sandbox.simulator import serve_forever; "
        "sys.exit(serve_forever(load_config(sys.argv[1]), Path(sys.argv[2])))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(config_path), str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert (
            first.startswith("FAILOVER_ODBC_SITE_A=Driver=SQLite3;Database=") and "StoragePlatform.site-a.db" in first
        )
        second = proc.stdout.readline()
        assert second.startswith("FAILOVER_ODBC_SITE_B=") and "StoragePlatform.site-b.db" in second
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0
    assert "secret-value" not in first + out
    assert (tmp_path / "state" / "as-a" / "services.json").exists()


def test_faults_delay_or_stop_task_file_consumption(platform: SimulatedPlatform) -> None:
    """Spec v3 §6: faults.json consume_delay_s and "consume": false."""
    task = local(platform, "as-a", TASK_QUEUE + "\\" + TASK)
    set_faults(platform, "as-a", consume_delay_s=1.5)
    started = time.monotonic()
    op(platform, "as-a", "taskqueue.drop", folder=TASK_QUEUE, name=TASK)
    assert wait_for(lambda: not task.exists(), timeout=5)
    assert time.monotonic() - started >= 1.4
    set_faults(platform, "as-a", consume=False)
    op(platform, "as-a", "taskqueue.drop", folder=TASK_QUEUE, name=TASK)
    time.sleep(1.0)
    assert task.exists()  # never consumed
    set_faults(platform, "as-a")
    assert wait_for(lambda: not task.exists(), timeout=3)


def test_each_account_server_names_its_own_sites_database(platform: SimulatedPlatform) -> None:
    """Issue 9 item 4: DatabaseConnection names that site's SQLite database in a form the bot's check reads."""
    from actions.connection_strings import db_identity
    from actions.settings_xml import read_database_connection

    for host, site in (("as-a", "site-a"), ("as-b", "site-b")):
        named = read_database_connection(local(platform, host, AS_SETTINGS).read_bytes())
        assert named is not None
        ours = db_identity(platform.database(site).odbc_connection_string())
        assert db_identity(named).same_as(ours)
        assert str(platform.database(site).path) in named
    a = db_identity(platform.database("site-a").odbc_connection_string())
    assert not a.same_as(db_identity(platform.database("site-b").odbc_connection_string()))
