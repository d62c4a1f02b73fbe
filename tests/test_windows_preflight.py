"""Preflight and `check` try the stdin route before anything changes and say plainly what will block the bot.

Issue 15, items 5 and 6: only file.replace travelled over stdin, so a broken stdin route first showed at
F2/B2 after a service had been stopped; a host in Constrained Language Mode passed host.info and failed
everything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.preflight import CheckResult, probe_host
from actions.request_counting import RequestCounter
from actions.winrm import WinRMExecutor
from sandbox.simulator import SimulatedPlatform
from tests.support.platform import running_platform, write_config


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[SimulatedPlatform]:
    with running_platform(write_config(tmp_path / "config"), tmp_path / "state") as started:
        yield started


def faults(platform: SimulatedPlatform, host: str, **values: Any) -> None:
    (platform.host_dir(host) / "faults.json").write_text(json.dumps(values), encoding="utf-8")


def probe(platform: SimulatedPlatform, host: str, counter: RequestCounter | None = None) -> dict[str, CheckResult]:
    with WinRMExecutor(on_request=counter) as ex:
        return {r.check: r for r in probe_host(platform.config, ex, platform.config.host(host))}


def test_preflight_travels_the_stdin_route_and_reports_limits_and_service_configuration(
    platform: SimulatedPlatform,
) -> None:
    counter = RequestCounter()
    results = probe(platform, "ss-a1", counter)
    assert counter.actions["Send"] == 1  # host.preflight went over stdin, as file.replace will
    route = results["powershell"]
    assert route.ok and "FullLanguage; stdin ok" in route.detail
    assert "MaxEnvelopeSizekb 500" in route.detail and "Settings.xml " in route.detail
    assert "Attix5ProStorageServer Automatic as LocalSystem, no dependents" in route.detail
    assert results["service"].ok and results["service"].detail == "Attix5ProStorageServer: Running"


def test_a_lowered_envelope_limit_and_dependents_are_reported(platform: SimulatedPlatform) -> None:
    faults(platform, "as-a", max_envelope_size_kb=150, dependents={"Attix5ProAccountServer": ["Attix5ProWeb"]})
    results = probe(platform, "as-a")
    assert "MaxEnvelopeSizekb 150" in results["powershell"].detail
    assert "Attix5ProWeb (Running)" in results["powershell"].detail


def test_constrained_language_mode_is_said_plainly(platform: SimulatedPlatform) -> None:
    faults(platform, "as-a", constrained_language=True)
    results = probe(platform, "as-a")
    assert results["winrm"].ok  # host.info still answers: that is why this needs saying
    powershell = results["powershell"]
    assert not powershell.ok
    assert "ConstrainedLanguage mode (AppLocker/WDAC)" in powershell.detail
    assert "will fail on this host" in powershell.detail


def test_a_group_policy_restricted_execution_policy_is_said_plainly(platform: SimulatedPlatform) -> None:
    faults(platform, "ss-a2", execution_policies={"MachinePolicy": "Restricted"})
    powershell = probe(platform, "ss-a2")["powershell"]
    assert not powershell.ok
    assert "Group Policy sets the execution policy Restricted (MachinePolicy)" in powershell.detail


def test_a_disabled_service_fails_the_check_before_a_run_needs_it(platform: SimulatedPlatform) -> None:
    faults(platform, "ms-b1", start_type={"Attix5ProStorageServer": "Disabled"})
    config = probe(platform, "ms-b1")["service"]
    assert not config.ok and "Disabled (start type): it cannot be started" in config.detail
