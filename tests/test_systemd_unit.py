"""The systemd unit for ``failover-bot serve`` is valid, keeps its state private and can still reach the network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

UNIT = ROOT / "deploy" / "failover-bot.service"
INSTALLED = "/opt/failover-bot/.venv/bin/failover-bot"


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def test_the_unit_runs_serve_as_a_hardened_service_that_can_reach_windows_and_databases() -> None:
    d = _directives()
    assert d["Service.ExecStart"] == [f"{INSTALLED} serve --host 127.0.0.1 --port 3000"]
    assert d["Service.DynamicUser"] == ["yes"]
    assert d["Service.StateDirectory"] == ["failover-bot"] and d["Service.StateDirectoryMode"] == ["0700"]
    assert d["Service.UMask"] == ["0077"]
    assert d["Service.Environment"] == [
        "FAILOVER_CONFIG=/etc/failover-bot/failover.yml",
        "FAILOVER_DB_URL=sqlite:////var/lib/failover-bot/failover-bot.db",  # in the StateDirectory
    ]
    assert d["Service.EnvironmentFile"] == ["/etc/failover-bot/env"]  # secrets: not in the unit
    assert d["Service.Restart"] == ["on-failure"]
    assert d["Service.KillSignal"] == ["SIGINT"]  # serve finishes acknowledged work on KeyboardInterrupt
    # hardened, but WinRM, SQL Server, PostgreSQL and Slack stay reachable
    assert d["Service.ProtectSystem"] == ["strict"] and d["Service.NoNewPrivileges"] == ["yes"]
    assert d["Service.CapabilityBoundingSet"] == [""]
    families = d["Service.RestrictAddressFamilies"][0].split()
    assert {"AF_INET", "AF_INET6"} <= set(families)
    for forbidden in ("Service.PrivateNetwork", "Service.IPAddressDeny", "Service.SocketBindDeny"):
        assert forbidden not in d
    text = UNIT.read_text(encoding="utf-8")
    for secret in ("xoxb-", "xapp-", "PASSWORD="):
        assert secret not in text.split("[Unit]", 1)[1]  # the header comment may name them; the unit sets none
    assert d["Install.WantedBy"] == ["multi-user.target"]


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: scripts/setup --test installs the systemd package")
        pytest.skip("systemd-analyze is not installed (scripts/setup --test installs it)")
    return tool


def _local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's failover-bot (verify checks the program exists)."""
    program = Path(sys.executable).with_name("failover-bot")  # the console script of the running environment
    if not program.exists():
        program = Path(sys.executable)
    copy = tmp_path / "failover-bot.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, str(program)), encoding="utf-8")
    return copy


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    proc = subprocess.run([tool, "verify", str(_local_copy(tmp_path))], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr  # no warnings


def test_systemd_analyze_verify_catches_a_mistake(tmp_path: Path) -> None:
    """The check above is real: an unknown directive or a missing program is reported."""
    tool = _systemd_analyze()
    bad = _local_copy(tmp_path)
    bad.write_text(bad.read_text(encoding="utf-8").replace("UMask=", "UMsk="), encoding="utf-8")
    proc = subprocess.run([tool, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in proc.stderr and "UMsk" in proc.stderr
    proc = subprocess.run([tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    if not Path(INSTALLED).exists():
        assert proc.returncode != 0 and "is not executable" in proc.stderr


def test_exposure_is_low(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    proc = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=25", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level for failover-bot.service: " in proc.stdout
    level = float(proc.stdout.split("Overall exposure level for failover-bot.service: ")[1].split()[0])
    assert level <= 2.5, proc.stdout[-3000:]
