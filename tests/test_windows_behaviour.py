"""What the operation templates do on a Windows host as strict as a production one (issue 15, items 1–8).

The simulated host implements each operation's effect the way the template does it, including the
failures Windows produces (faults.json): Replace errors 1175/1176/1177, a locked temporary file, a file held
open by the AccountServer, pending/paused/disabled services and dependents, a logon failure (1069),
Constrained Language Mode and access denied.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions import remote
from actions.winrm import WinRMExecutor
from bot.config import Host
from bot.errors import RemoteOperationFailed
from sandbox.simulator import SimulatedPlatform
from tests.support.platform import running_platform, write_config

AS = "Attix5ProAccountServer"
SS = "Attix5ProStorageServer"
SETTINGS = r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml"
QUEUE = r"C:\ProgramData\Attix5 Pro\AS_Service\TaskQueue"
CLM = "Method invocation is supported only on core types in this language mode"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[SimulatedPlatform]:
    config = write_config(tmp_path / "config", winrm={"command_timeout_s": 30})
    with running_platform(config, tmp_path / "state") as started:
        yield started


@pytest.fixture
def ex() -> Iterator[WinRMExecutor]:
    with WinRMExecutor() as executor:
        yield executor


def faults(platform: SimulatedPlatform, host: str, **values: Any) -> None:
    (platform.host_dir(host) / "faults.json").write_text(json.dumps(values), encoding="utf-8")


def services(platform: SimulatedPlatform, host: str, **states: str) -> dict[str, str]:
    path = platform.host_dir(host) / "services.json"
    current = json.loads(path.read_text(encoding="utf-8"))
    if states:
        current.update(states)
        path.write_text(json.dumps(current), encoding="utf-8")
    return dict(current)


def later(seconds: float, action: Any) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def host(platform: SimulatedPlatform, name: str) -> Host:
    return platform.config.host(name)


def settings_file(platform: SimulatedPlatform, name: str = "as-b") -> Path:
    return platform.states[name].resolve(SETTINGS)


def leftovers(platform: SimulatedPlatform, name: str = "as-b") -> list[str]:
    return sorted(p.name for p in settings_file(platform, name).parent.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- item 2: services already changing


def test_stop_waits_out_stop_pending_instead_of_failing_at_once(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    """The natural Retry after 'stuck in StopPending' waits (Stop() would fail at once with 1061)."""
    faults(platform, "ms-b1", stuck={SS: "StopPending"})
    services(platform, "ms-b1", **{SS: "Stopped"})
    timer = later(0.8, lambda: faults(platform, "ms-b1"))
    try:
        result = remote.stop_service(ex, host(platform, "ms-b1"), SS, 10)
    finally:
        timer.cancel()
    assert result == remote.ServiceResult("Stopped", True)


def test_stop_of_a_starting_service_waits_for_running_then_stops(
    platform: SimulatedPlatform, ex: WinRMExecutor
) -> None:
    faults(platform, "ms-b1", stuck={SS: "StartPending"})
    with pytest.raises(RemoteOperationFailed, match="did not start within 0.5 s: stuck in StartPending"):
        remote.stop_service(ex, host(platform, "ms-b1"), SS, 0.5)
    timer = later(0.5, lambda: faults(platform, "ms-b1"))
    try:
        assert remote.stop_service(ex, host(platform, "ms-b1"), SS, 10) == remote.ServiceResult("Stopped", True)
    finally:
        timer.cancel()


def test_start_of_a_stopping_service_waits_for_stopped_then_starts(
    platform: SimulatedPlatform, ex: WinRMExecutor
) -> None:
    faults(platform, "as-b", stuck={AS: "StopPending"})
    timer = later(0.5, lambda: faults(platform, "as-b"))
    try:
        assert remote.start_service(ex, host(platform, "as-b"), AS, 10) == remote.ServiceResult("Running", True)
    finally:
        timer.cancel()


def test_already_running_is_success_and_a_starting_one_is_waited_for(
    platform: SimulatedPlatform, ex: WinRMExecutor
) -> None:
    services(platform, "as-b", **{AS: "Running"})
    assert remote.start_service(ex, host(platform, "as-b"), AS, 5) == remote.ServiceResult("Running", False)
    faults(platform, "as-b", stuck={AS: "StartPending"})
    timer = later(0.5, lambda: faults(platform, "as-b"))
    try:
        assert remote.start_service(ex, host(platform, "as-b"), AS, 10).state == "Running"
    finally:
        timer.cancel()


def test_a_paused_service_is_not_started_and_says_why(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    services(platform, "as-b", **{AS: "Paused"})
    with pytest.raises(RemoteOperationFailed, match=f"service '{AS}' is Paused: resume or stop it first"):
        remote.start_service(ex, host(platform, "as-b"), AS, 5)
    assert services(platform, "as-b")[AS] == "Paused"
    assert remote.stop_service(ex, host(platform, "as-b"), AS, 5) == remote.ServiceResult("Stopped", True)


def test_a_disabled_service_is_refused_by_its_start_type(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    services(platform, "as-b", **{AS: "Stopped"})
    faults(platform, "as-b", start_type={AS: "Disabled"})
    with pytest.raises(RemoteOperationFailed, match=r"is Disabled \(its start type\): set it to Automatic or Manual"):
        remote.start_service(ex, host(platform, "as-b"), AS, 5)
    assert services(platform, "as-b")[AS] == "Stopped"


def test_running_dependents_are_named_and_not_stopped(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    services(platform, "as-b", **{AS: "Running", "Attix5ProWebConsole": "Running"})
    faults(platform, "as-b", dependents={AS: ["Attix5ProWebConsole"]})
    with pytest.raises(RemoteOperationFailed, match="has running dependent services: Attix5ProWebConsole; stop"):
        remote.stop_service(ex, host(platform, "as-b"), AS, 5)
    assert services(platform, "as-b")[AS] == "Running"
    assert services(platform, "as-b")["Attix5ProWebConsole"] == "Running"
    services(platform, "as-b", Attix5ProWebConsole="Stopped")
    assert remote.stop_service(ex, host(platform, "as-b"), AS, 5).state == "Stopped"


# --------------------------------------------------------------------------- item 4: the real reason


def test_a_logon_failure_reports_the_whole_chain(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    services(platform, "as-b", **{AS: "Stopped"})
    faults(platform, "as-b", logon_failure=[AS])
    with pytest.raises(RemoteOperationFailed) as failure:
        remote.start_service(ex, host(platform, "as-b"), AS, 5)
    message = str(failure.value)
    assert f"Cannot start service {AS}" in message
    assert "The service did not start due to a logon failure (Win32 error 1069)" in message


# --------------------------------------------------------------------------- item 1: a replace never loses the file


def _replace(platform: SimulatedPlatform, ex: WinRMExecutor) -> tuple[bytes, bytes, remote.ReplaceResult]:
    current = remote.read_file(ex, host(platform, "as-b"), SETTINGS)
    new = current.content.replace(b"</Settings>", b"<!-- changed -->\r\n</Settings>")
    return current.content, new, remote.replace_file(ex, host(platform, "as-b"), SETTINGS, new, current.sha256)


@pytest.mark.parametrize("code", [1175, 1176])
def test_transient_replace_errors_are_retried(platform: SimulatedPlatform, ex: WinRMExecutor, code: int) -> None:
    faults(platform, "as-b", replace_error=code, replace_failures=2)
    old, new, result = _replace(platform, ex)
    assert result.changed and result.backup_path
    assert settings_file(platform).read_bytes() == new
    assert platform.states["as-b"].resolve(result.backup_path).read_bytes() == old
    assert json.loads((platform.host_dir("as-b") / "faults.json").read_text())["replace_failures"] == 0
    assert leftovers(platform) == []


def test_error_1177_puts_the_checked_new_content_in_place(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    """1177: the original is already the backup; the old template's finally deleted the only new copy."""
    faults(platform, "as-b", replace_error=1177, replace_failures=1)
    old, new, result = _replace(platform, ex)
    assert result.changed
    assert settings_file(platform).read_bytes() == new
    assert result.backup_path and platform.states["as-b"].resolve(result.backup_path).read_bytes() == old
    assert leftovers(platform) == []


def test_persistent_replace_failure_leaves_the_file_unchanged_and_says_so(
    platform: SimulatedPlatform, ex: WinRMExecutor
) -> None:
    faults(platform, "as-b", replace_error=1176, replace_failures=99)
    before = settings_file(platform).read_bytes()
    with pytest.raises(RemoteOperationFailed, match=r"failed after 5 attempt\(s\).*Win32 error 1176.*is unchanged"):
        _replace(platform, ex)
    assert settings_file(platform).read_bytes() == before
    assert leftovers(platform) == []


def test_a_locked_temporary_file_is_reported_and_the_file_kept(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    faults(platform, "as-b", locked_temp=True)
    before = settings_file(platform).read_bytes()
    with pytest.raises(RemoteOperationFailed) as failure:
        _replace(platform, ex)
    message = str(failure.value)
    assert "is unchanged; the temporary file" in message and "could not be removed" in message
    assert settings_file(platform).read_bytes() == before
    assert len(leftovers(platform)) == 1  # left where the message says


# --------------------------------------------------------------------------- item 7: reads that lie


def test_a_file_the_account_server_holds_open_is_read_but_not_replaced(
    platform: SimulatedPlatform, ex: WinRMExecutor
) -> None:
    faults(platform, "as-b", held_open=[SETTINGS])
    before = settings_file(platform).read_bytes()
    assert remote.read_file(ex, host(platform, "as-b"), SETTINGS).content == before
    with pytest.raises(RemoteOperationFailed, match=r"Win32 error 1175.*is unchanged"):
        _replace(platform, ex)
    assert settings_file(platform).read_bytes() == before


def test_access_denied_is_reported_as_such_not_as_missing(platform: SimulatedPlatform, ex: WinRMExecutor) -> None:
    faults(platform, "as-b", denied=[QUEUE, SETTINGS])
    with pytest.raises(RemoteOperationFailed, match="access denied: "):
        remote.path_exists(ex, host(platform, "as-b"), QUEUE)
    with pytest.raises(RemoteOperationFailed, match="access denied: "):
        remote.read_file(ex, host(platform, "as-b"), SETTINGS)


# --------------------------------------------------------------------------- item 8: paths


@pytest.mark.parametrize(
    "path",
    [
        r"C:Settings.xml",
        r"\ProgramData\Settings.xml",
        r"\\fileserver\share\Settings.xml",
        r"C:\ProgramData\..\Settings.xml",
        r"C:/ProgramData/Settings.xml",
        "C:\\ProgramData\\\\Settings.xml",
    ],
)
def test_only_full_drive_letter_paths_are_accepted(platform: SimulatedPlatform, ex: WinRMExecutor, path: str) -> None:
    with pytest.raises(RemoteOperationFailed, match="not an absolute path"):
        remote.read_file(ex, host(platform, "as-b"), path)


# --------------------------------------------------------------------------- item 6: hardened servers


def test_constrained_language_mode_is_reported_by_host_info_and_fails_everything_else(
    platform: SimulatedPlatform, ex: WinRMExecutor
) -> None:
    faults(platform, "as-b", constrained_language=True)
    info = remote.host_info(ex, host(platform, "as-b"))
    assert info.language_mode == "ConstrainedLanguage"
    with pytest.raises(RemoteOperationFailed, match=CLM):
        remote.query_service(ex, host(platform, "as-b"), AS)
    with pytest.raises(RemoteOperationFailed, match=CLM):
        _replace(platform, ex)  # over stdin: the bootstrap itself is refused
