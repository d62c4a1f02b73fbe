"""The WinRM executor and remote operations over real pywinrm against the simulated platform."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from requests.adapters import HTTPAdapter

from actions import remote
from actions.hosts import WinRMCredentials
from actions.request_counting import CountingAdapter, RequestCounter
from actions.winrm import WinRMExecutor, clixml_to_text
from bot.config import Config, Host, load_config
from bot.errors import AuthenticationFailed, HostUnreachable, OperationTimedOut, RemoteOperationFailed
from sandbox.simulator import SimulatedPlatform, read_operations
from tests.support.platform import TEST_WINRM_PASSWORD, running_platform, write_config

AS = "Attix5ProAccountServer"
SS = "Attix5ProStorageServer"


@dataclass
class Sim:
    config: Config
    config_path: Path
    state: Path
    platform: SimulatedPlatform

    def host(self, name: str) -> Host:
        return self.config.host(name)

    def local(self, host: str, windows_path: str) -> Path:
        """DIR/<host>/C/<path>, the simulated host's file for a Windows path."""
        drive, _, rest = windows_path.partition(":\\")
        return self.state / host / drive.upper() / Path(*rest.split("\\"))

    def services(self, host: str) -> dict[str, str]:
        return json.loads((self.state / host / "services.json").read_text(encoding="utf-8"))

    def set_services(self, host: str, **states: str) -> None:
        path = self.state / host / "services.json"
        path.write_text(json.dumps({**self.services(host), **states}), encoding="utf-8")

    def faults(self, host: str, **faults: Any) -> None:
        (self.state / host / "faults.json").write_text(json.dumps(faults), encoding="utf-8")

    def operations(self, host: str | None = None) -> list[dict[str, Any]]:
        return [op for op in read_operations(self.state) if host is None or op["host"] == host]

    @property
    def settings(self) -> str:
        return self.config.windows_path(self.config.redstor.account_server.settings)

    @property
    def task_queue(self) -> str:
        return self.config.windows_path(self.config.redstor.account_server.task_queue)


def _start(tmp_path: Path, **overrides: Any) -> Iterator[Sim]:
    config_path = write_config(tmp_path / "config", **overrides)
    state = tmp_path / "state"
    with running_platform(config_path, state) as platform:
        yield Sim(load_config(config_path), config_path, state, platform)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    yield from _start(tmp_path, winrm={"command_timeout_s": 20})


@pytest.fixture
def counter() -> RequestCounter:
    return RequestCounter()


@pytest.fixture
def ex(counter: RequestCounter) -> Iterator[WinRMExecutor]:
    with WinRMExecutor(on_request=counter) as executor:
        yield executor


# --------------------------------------------------------------------------- operations and their effects


def test_host_info(sim: Sim, ex: WinRMExecutor) -> None:
    info = remote.host_info(ex, sim.host("as-b"))
    assert info.hostname == "AS-B"
    assert info.ps_version.startswith("5.1")


def test_query_service_reports_services_json(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    assert remote.query_service(ex, host, AS) == sim.services("as-b")[AS]
    sim.set_services("as-b", **{AS: "Paused"})
    assert remote.query_service(ex, host, AS) == "Paused"


def test_stop_start_restart_change_services_json(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    sim.set_services("as-b", **{AS: "Running"})

    assert remote.stop_service(ex, host, AS, 10) == remote.ServiceResult("Stopped", True)
    assert sim.services("as-b")[AS] == "Stopped"
    assert remote.stop_service(ex, host, AS, 10) == remote.ServiceResult("Stopped", False)

    assert remote.start_service(ex, host, AS, 10) == remote.ServiceResult("Running", True)
    assert sim.services("as-b")[AS] == "Running"
    assert remote.start_service(ex, host, AS, 10) == remote.ServiceResult("Running", False)

    assert remote.restart_service(ex, host, AS, 10) == remote.ServiceResult("Running", True)
    log = [(op["operation"], op["target"], op.get("changed")) for op in sim.operations("as-b")]
    assert log == [
        ("service.stop", AS, True),
        ("service.stop", AS, False),
        ("service.start", AS, True),
        ("service.start", AS, False),
        ("service.restart", AS, True),
    ]


def test_unknown_or_wildcard_service_is_refused_with_the_remote_message(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    with pytest.raises(RemoteOperationFailed, match="expected exactly one service named 'NoSuchService', found 0"):
        remote.query_service(ex, host, "NoSuchService")
    with pytest.raises(RemoteOperationFailed, match="wildcard characters are not allowed") as caught:
        remote.stop_service(ex, host, "Attix5*", 5)
    assert caught.value.host == "as-b"
    assert sim.services("as-b")[AS] == "Running"


def test_read_file_returns_exact_bytes(sim: Sim, ex: WinRMExecutor) -> None:
    on_disk = sim.local("as-b", sim.settings).read_bytes()
    content = remote.read_file(ex, sim.host("as-b"), sim.settings)
    assert content.exists
    assert content.content == on_disk
    assert content.sha256 == remote.sha256_hex(on_disk)
    missing = remote.read_file(ex, sim.host("as-b"), sim.settings + ".missing")
    assert missing == remote.FileContent(False, b"", "")


def test_read_file_keeps_bom_and_non_ascii(sim: Sim, ex: WinRMExecutor) -> None:
    local = sim.local("as-b", sim.settings)
    raw = "\ufeff<Settings>\r\n  <ServerName>Zürich-\u00e9</ServerName>\r\n</Settings>".encode()
    local.write_bytes(raw)
    assert remote.read_file(ex, sim.host("as-b"), sim.settings).content == raw


def test_replace_file_swaps_atomically_and_keeps_a_timestamped_backup(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    local = sim.local("as-b", sim.settings)
    before = remote.read_file(ex, host, sim.settings)
    new = before.content.replace(b">True</IsSlave>", b">False</IsSlave>")
    assert new != before.content
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

    result = remote.replace_file(ex, host, sim.settings, new, before.sha256, now=now)

    assert result == remote.ReplaceResult(True, sim.settings + ".20240506T070809.000Z.bak")
    assert local.read_bytes() == new
    backup = local.with_name(local.name + ".20240506T070809.000Z.bak")
    assert backup.read_bytes() == before.content
    assert sorted(p.name for p in local.parent.iterdir() if p.name.startswith(local.name)) == [local.name, backup.name]

    again = remote.replace_file(ex, host, sim.settings, new, before.sha256)
    assert again == remote.ReplaceResult(False, None)
    assert sorted(p.name for p in local.parent.iterdir() if p.name.startswith(local.name)) == [local.name, backup.name]
    changes = [op.get("changed") for op in sim.operations("as-b") if op["operation"] == "file.replace"]
    assert changes == [True, False]


def _files_beside(local: Path) -> list[str]:
    return sorted(p.name for p in local.parent.iterdir())


def test_replace_refuses_a_file_changed_since_it_was_read(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    local = sim.local("as-b", sim.settings)
    read = remote.read_file(ex, host, sim.settings)
    edited_by_someone = read.content.replace(b"<LogLevel", b"<!-- edited --><LogLevel")
    local.write_bytes(edited_by_someone)
    listing = _files_beside(local)

    with pytest.raises(RemoteOperationFailed, match="changed since it was read"):
        remote.replace_file(ex, host, sim.settings, b"<Settings/>", read.sha256)

    assert local.read_bytes() == edited_by_someone
    assert _files_beside(local) == listing


def test_replace_with_damaged_content_writes_nothing(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    local = sim.local("as-b", sim.settings)
    read = remote.read_file(ex, host, sim.settings)
    listing = _files_beside(local)
    data = {
        "path": sim.settings,
        "content_b64": "PFNldHRpbmdzLz4=",  # <Settings/>
        "sha256": remote.sha256_hex(b"something else"),
        "expected_sha256": read.sha256,
        "backup_path": remote.backup_path_for(sim.settings),
    }
    with pytest.raises(RemoteOperationFailed, match="content check failed"):
        ex.run(host, "file.replace", data)
    assert local.read_bytes() == read.content
    assert _files_beside(local) == listing


def test_replace_of_a_missing_file_fails_and_creates_nothing(sim: Sim, ex: WinRMExecutor) -> None:
    path = sim.settings + ".nope"
    with pytest.raises(RemoteOperationFailed, match="file not found"):
        remote.replace_file(ex, sim.host("as-b"), path, b"x", remote.sha256_hex(b""))
    assert not sim.local("as-b", path).exists()


def test_timed_out_replace_leaves_old_or_new_file_whole_and_no_temp_file(tmp_path: Path) -> None:
    for sim in _start(tmp_path, winrm={"command_timeout_s": 20}):
        host = sim.host("as-b")
        local = sim.local("as-b", sim.settings)
        with WinRMExecutor() as ex:
            read = remote.read_file(ex, host, sim.settings)
            new = read.content.replace(b">True</IsSlave>", b">False</IsSlave>")
            sim.faults("as-b", timeout_faults=1000)
            with pytest.raises(OperationTimedOut):
                ex.run(host, "file.replace", _replace_data(sim.settings, new, read.sha256), timeout_s=1)
            sim.faults("as-b")
            assert local.read_bytes() in (read.content, new)
            assert not [p for p in local.parent.iterdir() if p.name.endswith(".tmp")]
            # The host is still usable through the same executor.
            assert remote.read_file(ex, host, sim.settings).content == local.read_bytes()


def _replace_data(path: str, new: bytes, expected: str) -> dict[str, Any]:
    import base64

    return {
        "path": path,
        "content_b64": base64.b64encode(new).decode(),
        "sha256": remote.sha256_hex(new),
        "expected_sha256": expected,
        "backup_path": remote.backup_path_for(path),
    }


def test_path_exists(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    assert remote.path_exists(ex, host, sim.task_queue) == (True, True)
    assert remote.path_exists(ex, host, sim.settings) == (True, False)
    assert remote.path_exists(ex, host, sim.settings.upper()) == (True, False)  # Windows paths ignore case
    assert remote.path_exists(ex, host, sim.task_queue + "\\missing") == (False, False)


def test_drop_task_file_creates_it_and_reports_one_already_waiting(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")  # a Slave: it does not consume task files
    local = sim.local("as-b", sim.task_queue) / remote.TASK_FILE
    assert remote.task_file_waiting(ex, host, sim.task_queue) is False

    first = remote.drop_task_file(ex, host, sim.task_queue)
    assert first == remote.TaskDrop(True, False, sim.task_queue + "\\" + remote.TASK_FILE)
    assert local.is_file() and local.read_bytes() == b""
    assert remote.task_file_waiting(ex, host, sim.task_queue) is True

    second = remote.drop_task_file(ex, host, sim.task_queue)
    assert (second.created, second.already_waiting) == (False, True)


def test_running_master_consumes_the_task_file(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-a")  # the Master
    assert remote.drop_task_file(ex, host, sim.task_queue).created
    deadline = time.monotonic() + 5
    while remote.task_file_waiting(ex, host, sim.task_queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert remote.task_file_waiting(ex, host, sim.task_queue) is False


def test_missing_task_queue_folder(sim: Sim, ex: WinRMExecutor) -> None:
    host = sim.host("as-b")
    folder = sim.task_queue + "Missing"
    with pytest.raises(RemoteOperationFailed, match="task queue folder not found"):
        remote.drop_task_file(ex, host, folder)
    assert not sim.local("as-b", folder).exists()
    assert remote.task_queue_status(ex, host, folder) == remote.TaskQueueStatus(False, False)
    with pytest.raises(RemoteOperationFailed, match="task queue folder not found"):
        remote.task_file_waiting(ex, host, folder)


# --------------------------------------------------------------------------- shells and connections


def test_requests_are_counted_only_through_the_injected_hook(sim: Sim, counter: RequestCounter) -> None:
    """The production executor sends through requests' own adapters; a hook mounts a counting one, patching nothing."""
    host = sim.host("as-b")
    with WinRMExecutor() as plain, WinRMExecutor(on_request=counter) as counted:
        remote.host_info(plain, host)
        remote.host_info(counted, host)
        transport = plain._channels["as-b"].protocol.transport
        assert transport.session is not None and "build_session" not in vars(transport)
        assert {type(a) for a in transport.session.adapters.values()} == {HTTPAdapter}
        session = counted._channels["as-b"].protocol.transport.session
        assert session is not None and {type(a) for a in session.adapters.values()} == {CountingAdapter}
    assert counter.actions["Create"] == 1 and counter.actions["Command"] == 1 and counter.connections == 1


def test_one_shell_and_one_connection_per_host_across_many_operations(sim: Sim, counter: RequestCounter) -> None:
    with WinRMExecutor(on_request=counter) as ex:
        for _ in range(5):
            remote.query_service(ex, sim.host("as-b"), AS)
            remote.read_file(ex, sim.host("as-b"), sim.settings)
            remote.query_service(ex, sim.host("ms-b1"), SS)
        assert counter.actions["Create"] == 2
        assert counter.actions["Command"] == 15
        assert counter.actions["Signal"] == 15  # every command is terminated after its result
        assert counter.actions["Send"] == 0  # small scripts travel inline on the command line
        assert counter.requests == 2 + 15 * 3  # Create per host; Command, Receive, Signal per operation
        assert counter.actions["Delete"] == 0
        assert counter.connections == 2
    assert counter.actions["Delete"] == 2  # close() deletes both shells


def test_a_large_script_goes_over_stdin(sim: Sim, counter: RequestCounter) -> None:
    host = sim.host("as-b")
    with WinRMExecutor(on_request=counter) as ex:
        current = remote.read_file(ex, host, sim.settings)
        padded = current.content.replace(b"</Settings>", b"<!-- " + b"x" * 6000 + b" -->\r\n</Settings>")
        assert remote.replace_file(ex, host, sim.settings, padded, current.sha256).changed
        assert counter.actions["Send"] == 1  # only the file.replace carrying the file
    assert sim.local("as-b", sim.settings).read_bytes() == padded


def test_parallel_hosts_and_serialised_commands_per_host(sim: Sim, counter: RequestCounter) -> None:
    hosts = [sim.host(n) for n in ("as-a", "as-b", "ss-a1", "ms-b1")]
    errors: list[BaseException] = []
    results: list[str] = []

    def work(executor: WinRMExecutor, host: Host) -> None:
        try:
            for _ in range(4):
                results.append(remote.host_info(executor, host).hostname)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with WinRMExecutor(on_request=counter) as executor:
        threads = [threading.Thread(target=work, args=(executor, h)) for h in hosts for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(set(results)) == ["AS-A", "AS-B", "MS-B1", "SS-A1"]
    assert len(results) == 32
    assert counter.actions["Create"] == 4


def test_a_lost_shell_is_recreated_once(tmp_path: Path, counter: RequestCounter) -> None:
    config_path = write_config(tmp_path / "config", winrm={"command_timeout_s": 20})
    state = tmp_path / "state"
    with WinRMExecutor(on_request=counter) as ex:
        with running_platform(config_path, state):
            host = load_config(config_path).host("as-b")  # with the credentials running_platform set
            assert remote.query_service(ex, host, AS) == "Running"
        # The host "rebooted": same address, no shells.
        with running_platform(config_path, state):
            assert remote.query_service(ex, host, AS) == "Running"
            assert counter.actions["Create"] == 2
            assert remote.query_service(ex, host, AS) == "Running"
            assert counter.actions["Create"] == 2


# --------------------------------------------------------------------------- faults


def test_refused_connection_is_host_unreachable(sim: Sim, ex: WinRMExecutor) -> None:
    sim.faults("as-a", refuse=True)
    with pytest.raises(HostUnreachable, match="cannot connect") as caught:
        remote.host_info(ex, sim.host("as-a"))
    assert caught.value.host == "as-a"
    assert remote.host_info(ex, sim.host("as-b")).hostname == "AS-B"  # other hosts unaffected
    sim.faults("as-a")
    assert remote.host_info(ex, sim.host("as-a")).hostname == "AS-A"


def test_nothing_listening_is_host_unreachable(sim: Sim, ex: WinRMExecutor) -> None:
    sim.platform.stop()
    with pytest.raises(HostUnreachable):
        remote.host_info(ex, sim.host("as-b"))


def test_rejected_credentials_are_authentication_failed_without_the_password(sim: Sim, ex: WinRMExecutor) -> None:
    sim.faults("as-b", reject_auth=True)
    with pytest.raises(AuthenticationFailed) as caught:
        remote.host_info(ex, sim.host("as-b"))
    chain = [caught.value, caught.value.__cause__]
    assert all(TEST_WINRM_PASSWORD not in str(e) and TEST_WINRM_PASSWORD not in repr(e) for e in chain)


def _with_password(host: Host, password: str) -> Host:
    credentials = WinRMCredentials(host.winrm.credentials.username, password)
    return replace(host, winrm=replace(host.winrm, credentials=credentials))


def test_wrong_password_is_authentication_failed(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILOVER_WINRM_PASSWORD", "wrong-password-123")
    host = load_config(sim.config_path).host("as-b")
    with WinRMExecutor() as ex, pytest.raises(AuthenticationFailed) as caught:
        remote.host_info(ex, host)
    assert "wrong-password-123" not in str(caught.value)


def test_missing_credentials_name_the_variable(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_WINRM_PASSWORD")
    host = load_config(sim.config_path).host("as-b")
    with WinRMExecutor() as ex, pytest.raises(AuthenticationFailed, match="FAILOVER_WINRM_PASSWORD"):
        remote.host_info(ex, host)


def test_credentials_are_read_once_when_the_configuration_is_loaded(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    host = sim.host("as-b")  # loaded while the variables were set
    monkeypatch.delenv("FAILOVER_WINRM_USER")
    monkeypatch.delenv("FAILOVER_WINRM_PASSWORD")
    with WinRMExecutor() as ex:  # the executor never looks at the environment
        assert remote.host_info(ex, host).hostname == "AS-B"
    assert TEST_WINRM_PASSWORD not in repr(host) and TEST_WINRM_PASSWORD not in repr(sim.config)
    with WinRMExecutor() as ex, pytest.raises(AuthenticationFailed, match="rejected the credentials"):
        remote.host_info(ex, _with_password(host, "not-the-password"))


def test_operation_timeouts_within_the_deadline_are_waited_out(
    sim: Sim, ex: WinRMExecutor, counter: RequestCounter
) -> None:
    sim.faults("as-b", timeout_faults=3)
    assert remote.query_service(ex, sim.host("as-b"), AS) == "Running"
    assert counter.actions["Receive"] == 4


def test_operation_timeouts_beyond_the_deadline_time_out_and_terminate_the_command(
    sim: Sim, ex: WinRMExecutor, counter: RequestCounter
) -> None:
    host = sim.host("as-b")
    remote.host_info(ex, host)
    sim.faults("as-b", timeout_faults=100000)
    started = time.monotonic()
    with pytest.raises(OperationTimedOut, match="timed out after 1.5 s"):
        ex.run(host, "service.query", {"service": AS}, timeout_s=1.5)
    assert 1.5 <= time.monotonic() - started < 5
    assert counter.actions["Signal"] == 2
    sim.faults("as-b")
    assert remote.query_service(ex, host, AS) == "Running"
    assert counter.actions["Create"] == 1


def test_host_command_timeout_applies_by_default(tmp_path: Path) -> None:
    for sim in _start(tmp_path, winrm={"command_timeout_s": 1}):
        sim.faults("as-b", timeout_faults=100000)
        with WinRMExecutor() as ex, pytest.raises(OperationTimedOut, match="timed out after 1 s"):
            remote.host_info(ex, sim.host("as-b"))


def test_stuck_service_reports_where_it_got_stuck(sim: Sim, ex: WinRMExecutor) -> None:
    sim.faults("as-b", stuck={AS: "StopPending"})
    started = time.monotonic()
    with pytest.raises(RemoteOperationFailed, match="stuck in StopPending"):
        remote.stop_service(ex, sim.host("as-b"), AS, 1)
    assert time.monotonic() - started >= 1
    assert sim.services("as-b")[AS] == "Running"


def test_stuck_service_beyond_the_executor_deadline_times_out(sim: Sim, ex: WinRMExecutor) -> None:
    sim.faults("as-b", stuck={AS: "StopPending"})
    with pytest.raises(OperationTimedOut):
        ex.run(sim.host("as-b"), "service.stop", {"service": AS, "timeout_s": 3}, timeout_s=1)


def test_latency_slows_but_does_not_fail(sim: Sim, ex: WinRMExecutor, counter: RequestCounter) -> None:
    remote.host_info(ex, sim.host("as-b"))
    sim.faults("as-b", latency_ms=100)
    before = counter.requests
    started = time.monotonic()
    assert remote.query_service(ex, sim.host("as-b"), AS) == "Running"
    assert time.monotonic() - started >= 0.1 * (counter.requests - before)


def test_no_answer_within_the_read_timeout_is_host_unreachable(tmp_path: Path) -> None:
    for sim in _start(tmp_path, winrm={"operation_timeout_s": 1, "read_timeout_s": 2}):
        sim.faults("as-b", latency_ms=3000)
        started = time.monotonic()
        with WinRMExecutor() as ex, pytest.raises(HostUnreachable, match="no answer"):
            remote.host_info(ex, sim.host("as-b"))
        assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- stderr


def test_clixml_errors_are_decoded_and_progress_dropped() -> None:
    stderr = (
        b"#< CLIXML\r\n"
        b'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN>'
        b'<MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV></PR></MS></Obj>'
        b'<S S="Error">Get-Service : Cannot find any service with service name &apos;Nope&lt;1&gt;&apos;.'
        b"_x000D__x000A_</S>"
        b'<S S="Error">At line:1 char:1_x000D__x000A_</S>'
        b"</Objs>"
    )
    assert clixml_to_text(stderr) == (
        "Get-Service : Cannot find any service with service name 'Nope<1>'.\nAt line:1 char:1"
    )


def test_plain_stderr_is_returned_as_is() -> None:
    assert clixml_to_text(b"  'powershell.exe' is not recognized\r\n") == "'powershell.exe' is not recognized"
    assert clixml_to_text(b"") == ""
