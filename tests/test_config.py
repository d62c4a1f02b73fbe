"""Configuration: the example loads unchanged; each kind of mistake names file, field and problem, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.config import load_config
from bot.errors import ConfigError
from tests.support.paths import EXAMPLE_CONFIG


def test_example_config_loads_unchanged() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert config.platform == "example-platform"
    assert set(config.sites) == {"site-a", "site-b"}
    a = config.sites["site-a"]
    assert a.account_server.endpoint == "127.0.10.10:443"
    assert [ss.mirror for ss in a.storage_servers] == ["ms-b1", "ms-b2"]
    ms_b2 = config.host("ms-b2")
    assert ms_b2.winrm.url == "http://127.0.0.1:45212/wsman"
    assert (ms_b2.winrm.operation_timeout_s, ms_b2.winrm.read_timeout_s) == (30, 40)
    assert ms_b2.winrm.transport == "basic" and ms_b2.winrm.command_timeout_s == 120
    assert config.host("as-a").winrm.operation_timeout_s == 20
    assert (
        config.windows_path(config.redstor.account_server.settings)
        == r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml"
    )


def test_each_site_names_its_own_storage_platform_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spec v3: sites.<site>.storage_platform_db.odbc_env; table and columns stay the top-level ones."""
    config = load_config(EXAMPLE_CONFIG)
    assert config.db_of("site-a").odbc_env == "FAILOVER_ODBC_SITE_A"
    assert config.db_of("site-b").odbc_env == "FAILOVER_ODBC_SITE_B"
    assert config.db_of("site-b").table == config.db.table == "BackupServer"
    assert config.odbc_envs() == ["FAILOVER_ODBC_SITE_A", "FAILOVER_ODBC_SITE_B"]
    monkeypatch.setenv("FAILOVER_ODBC_SITE_A", "Driver=SQLite3;Database=/nonexistent")
    monkeypatch.delenv("FAILOVER_ODBC_SITE_B", raising=False)
    with pytest.raises(ConfigError, match="missing environment variable.*FAILOVER_ODBC_SITE_B"):
        config.check_env(odbc=True)


def test_a_site_without_its_own_database_uses_the_default_variable(tmp_path: Path) -> None:
    config = load_config(_mutate(tmp_path, lambda r: r["sites"]["site-a"].pop("storage_platform_db")))
    assert config.db_of("site-a").odbc_env == "FAILOVER_ODBC"
    assert config.odbc_envs() == ["FAILOVER_ODBC", "FAILOVER_ODBC_SITE_B"]


def _mutate(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    change(raw)
    p = tmp_path / "bad.yml"
    p.write_text(yaml.safe_dump(raw))
    return p


CASES = [
    ("unknown top-level key", lambda r: r.update(colour="blue"), "colour: unknown field"),
    ("unknown nested key", lambda r: r["slack"].update(aprovers=[]), "slack.aprovers: unknown field"),
    (
        "partner missing",
        lambda r: r["sites"]["site-a"].update(partner="site-z"),
        "sites.site-a.partner: 'site-z' names no site (have: site-a, site-b)",
    ),
    (
        "primary site missing",
        lambda r: r.update(primary_site="site-q"),
        "primary_site: 'site-q' names no site (have: site-a, site-b)",
    ),
    (
        "mirror names nothing",
        lambda r: r["sites"]["site-a"]["storage_servers"][1].update(mirror="ms-b9"),
        "sites.site-a.storage_servers[1].mirror: 'ms-b9' names no StorageServer of site-b (have: ms-b1, ms-b2)",
    ),
    (
        "duplicate host",
        lambda r: r["sites"]["site-b"]["storage_servers"][0].update(name="ss-a1"),
        "sites.site-b.storage_servers[0].name: duplicate host name 'ss-a1'",
    ),
    (
        "winrm not a URL",
        lambda r: r["sites"]["site-a"]["account_server"].update(winrm="as-a:5985"),
        "sites.site-a.account_server.winrm: not a WinRM URL",
    ),
    (
        "winrm mapping not a URL",
        lambda r: r["sites"]["site-b"]["storage_servers"][1]["winrm"].update(url="ftp://x/wsman"),
        "sites.site-b.storage_servers[1].winrm.url: not a WinRM URL",
    ),
    (
        "per-site database takes only odbc_env",
        lambda r: r["sites"]["site-a"]["storage_platform_db"].update(table="Other"),
        "sites.site-a.storage_platform_db.table: unknown field",
    ),
    ("bad transport", lambda r: r["winrm"].update(transport="telnet"), "winrm.transport"),
    (
        "port out of range",
        lambda r: r["sites"]["site-a"]["account_server"].update(port=70000),
        "sites.site-a.account_server.port",
    ),
    (
        "missing address",
        lambda r: r["sites"]["site-a"]["account_server"].pop("address"),
        "sites.site-a.account_server.address: required field is missing",
    ),
    (
        "timeouts inverted",
        lambda r: r["winrm"].update(operation_timeout_s=50),
        "operation_timeout_s (50) must be below read_timeout_s (30)",
    ),
]


@pytest.mark.parametrize(("label", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_names_file_field_and_problem(tmp_path: Path, label: str, change, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = _mutate(tmp_path, change)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(str(path) + ": ")
    assert expected in str(err.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.yml"
    bad.write_text("platform: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yml")


def test_cli_exits_2_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    path = _mutate(tmp_path, lambda r: r["sites"]["site-a"].update(partner="site-z"))
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "plan", "start", "site-a", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "sites.site-a.partner: 'site-z' names no site (have: site-a, site-b)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_environment_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_WINRM_PASSWORD", raising=False)
    monkeypatch.setenv("FAILOVER_WINRM_USER", "u")
    config = load_config(EXAMPLE_CONFIG)
    with pytest.raises(ConfigError, match="missing environment variable.*FAILOVER_WINRM_PASSWORD"):
        config.check_env(winrm=True)
    env = {"PATH": "/usr/bin:/bin", "FAILOVER_WINRM_USER": "u"}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check", "site-a", "--config", str(EXAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "FAILOVER_WINRM_PASSWORD" in proc.stderr and "Traceback" not in proc.stderr
