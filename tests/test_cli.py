"""The command line as an operator uses it: plan, check and report, exit codes and messages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.runs.service import RunService
from bot.store import audit
from bot.store.db import Store
from tests.support.paths import EXAMPLE_CONFIG, ROOT
from tests.support.platform import running_platform, write_config


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FAILOVER_", "SLACK_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=120, env=full_env, cwd=cwd or ROOT
    )


def test_plan_failover_prints_concrete_steps_and_changes_nothing(tmp_path: Path) -> None:
    proc = run_cli("plan", "start", "site-a", "--config", str(EXAMPLE_CONFIG), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in ("F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"):
        assert re.search(rf"\b{step}\b", out), step
    assert "Attix5ProAccountServer" in out and "as-b" in out
    assert r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml" in out
    assert "127.0.20.21:443" in out and "127.0.20.22:443" in out
    assert not list(tmp_path.iterdir())  # no state database, no files


def test_plan_failback_rebuilt_and_scope(tmp_path: Path) -> None:
    proc = run_cli(
        "plan",
        "failback",
        "site-a",
        "rebuilt",
        "scope=account",
        "--config",
        str(EXAMPLE_CONFIG),
        env={"FAILOVER_DB_URL": f"sqlite:///{tmp_path / 'x.db'}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\bR1\b", proc.stdout) and not re.search(r"\bB1\b", proc.stdout)
    assert "one-time password" in proc.stdout.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "start", "site-z"], "unknown site 'site-z'"),
        (["plan", "start", "site-a", "scope=everything"], "scope"),
        (["plan", "start", "site-a", "storage=ss-zz"], "ss-zz"),
        (["plan", "start", "site-a", "rebuilt"], "rebuilt"),
        (["plan", "sideways", "site-a"], "invalid choice"),
        (["report"], "run_id"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    proc = run_cli(*args, "--config", str(EXAMPLE_CONFIG)) if args[0] == "plan" else run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_passes_on_a_healthy_platform_and_fails_when_a_host_is_down(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg")
    with running_platform(config, tmp_path / "state") as platform:
        env = {k: os.environ[k] for k in ("FAILOVER_WINRM_USER", "FAILOVER_WINRM_PASSWORD", *platform.odbc_env())}
        ok = run_cli("check", "site-a", "--config", str(config), env=env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        for host in ("as-a", "as-b", "ss-a1", "ss-a2", "ms-b1", "ms-b2"):
            assert host in ok.stdout
        assert "all checks passed" in ok.stdout and "FAIL" not in ok.stdout
        assert " INFO " not in ok.stderr  # no WinRM chatter without -v
        assert "Master" in ok.stdout and "Slave" in ok.stdout
        (platform.host_dir("ss-a2") / "faults.json").write_text('{"refuse": true}')
        bad = run_cli("check", "site-a", "--config", str(config), env=env)
        assert bad.returncode == 1
        assert re.search(r"ss-a2\s+winrm\s+FAIL", bad.stdout)
        # the checks WinRM's failure kept from running are shown as SKIP, not left out
        assert re.search(r"ss-a2\s+service\s+SKIP\s+not run: winrm failed", bad.stdout)
        assert re.search(r"ss-a2\s+Settings.xml\s+SKIP", bad.stdout)
        # and the output ends with the list of what failed
        tail = bad.stdout.rstrip().splitlines()
        assert tail[-2] == "1 check(s) failed; 2 could not run:"
        assert tail[-1].startswith("  ss-a2 winrm: ")
        assert "simulated-password" not in bad.stdout + bad.stderr


def test_report_shows_the_timeline_and_detects_tampering(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = Store(f"sqlite:///{db}")
    from bot.config import load_config

    service = RunService(store, load_config(EXAMPLE_CONFIG))
    run = service.open_run("failover", "site-a", ["scope=account"], "U0ALICE", "C0INCIDENT")
    audit.record(store, run.id, "U0BOB", "refused", detail={"action": "approve", "reason": "not current"})
    service.abort(run.id, "U0ALICE", "rehearsal over")
    store.dispose()
    env = {"FAILOVER_DB_URL": f"sqlite:///{db}"}
    md = run_cli("report", run.id, env=env)
    assert md.returncode == 0, md.stderr
    assert "audit chain: intact" in md.stdout
    assert "run.started" in md.stdout and "run.aborted" in md.stdout and "U0BOB" in md.stdout
    js = run_cli("report", run.id, "--format", "json", env=env)
    assert js.returncode == 0 and '"chain_intact": true' in js.stdout
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_events SET actor = 'U0MALLORY' WHERE seq = 2"))
    engine.dispose()
    broken = run_cli("report", run.id, env=env)
    assert broken.returncode == 1
    assert "BROKEN" in broken.stdout and "#2" in broken.stdout
    missing = run_cli("report", "FO-99", env=env)
    assert missing.returncode == 2 and "no run 'FO-99'" in missing.stderr


def test_simulate_serves_until_stopped_and_names_missing_credentials(tmp_path: Path) -> None:
    import signal

    import winrm

    from actions import protocol
    from bot.config import load_config

    config_path = write_config(tmp_path / "cfg")
    missing = run_cli("simulate", "--config", str(config_path), "--state", str(tmp_path / "s"))
    assert missing.returncode == 2 and "FAILOVER_WINRM_USER" in missing.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAILOVER_", "SLACK_"))}
    env.update({"FAILOVER_WINRM_USER": "u", "FAILOVER_WINRM_PASSWORD": "p"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "simulate", "--config", str(config_path), "--state", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("FAILOVER_ODBC_SITE_A=Driver=SQLite3;")
        second = proc.stdout.readline()
        assert second.startswith("FAILOVER_ODBC_SITE_B=Driver=SQLite3;")
        host = load_config(config_path).host("as-b")
        p = winrm.protocol.Protocol(
            endpoint=host.winrm.url,
            transport="basic",
            username="u",
            password="p",
            server_cert_validation="validate",
            message_encryption="never",
        )
        shell = p.open_shell(codepage=65001, noprofile=True)
        cmd = p.run_command(shell, protocol.POWERSHELL, protocol.powershell_arguments())
        p.send_command_input(shell, cmd, protocol.render("host.info", {}).encode("utf-8"), end=True)
        out, _err, code = p.get_command_output(shell, cmd)
        p.cleanup_command(shell, cmd)
        p.close_shell(shell)
        assert code == 0 and protocol.parse_result(out.decode())["hostname"] == "AS-B"
        assert (tmp_path / "state" / "as-b" / "services.json").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_plan_short_is_one_line_per_step_and_the_default_keeps_its_detail(tmp_path: Path) -> None:
    short = run_cli("plan", "start", "site-a", "--short", "--config", str(EXAMPLE_CONFIG), cwd=tmp_path)
    assert short.returncode == 0, short.stderr
    lines = short.stdout.splitlines()
    assert lines[0].startswith("Failover of site-a") and len(lines) == 1 + 9
    f2 = next(line for line in lines if line.startswith("F2 "))
    assert re.match(r"F2\s+as-b\s+change\s+approver, then bot\s+Set IsSlave to False in Settings.xml$", f2)
    assert re.match(r"F0\s+sites\s+read\s+bot \(read-only\)", lines[1])
    assert any(re.match(r"F6\s+person \(ss-a1, ss-a2\)\s+change\s+a person \(Done\)", line) for line in lines)
    fb = run_cli("plan", "failback", "site-a", "--short", "--config", str(EXAMPLE_CONFIG), cwd=tmp_path)
    assert re.search(r"^B11\s.*destructive\s+2 approvers, not initiator\s+Delete", fb.stdout, re.M)
    full = run_cli("plan", "start", "site-a", "--config", str(EXAMPLE_CONFIG), cwd=tmp_path)
    assert "approvals: 1  KB" in full.stdout and "approvals: 1  KB" not in short.stdout  # contract §4 unchanged
    assert len(full.stdout.splitlines()) > 3 * len(lines)


def test_plan_creates_no_database_and_logs_nothing_at_info(tmp_path: Path) -> None:
    # a failback plan looks for the last failover's scope in the default ./failover-bot.db: read only
    proc = run_cli("plan", "failback", "site-a", "--config", str(EXAMPLE_CONFIG), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.iterdir())
    assert proc.stderr == ""  # no Alembic or other INFO lines without -v
    loud = run_cli("plan", "failback", "site-a", "-v", "--config", str(EXAMPLE_CONFIG), cwd=tmp_path)
    assert "INFO" in loud.stderr and "no database at sqlite:///failover-bot.db" in loud.stderr
    assert not list(tmp_path.iterdir())


def _db_with_a_run(tmp_path: Path) -> tuple[Path, str]:
    from bot.config import load_config

    db = tmp_path / "state.db"
    store = Store(f"sqlite:///{db}")
    run = RunService(store, load_config(EXAMPLE_CONFIG)).open_run(
        "failover", "site-a", ["scope=account"], "U0ALICE", "C0INCIDENT"
    )
    store.dispose()
    return db, run.id


def test_report_reads_only_and_names_the_database_it_looked_at(tmp_path: Path) -> None:
    db, run_id = _db_with_a_run(tmp_path)
    ok = run_cli("report", run_id, env={"FAILOVER_DB_URL": f"sqlite:///{db}"})
    assert ok.returncode == 0 and run_id in ok.stdout
    assert ok.stderr == ""  # no Alembic INFO lines: the report does not migrate
    missing_run = run_cli("report", "FO-99", env={"FAILOVER_DB_URL": f"sqlite:///{db}"})
    assert missing_run.returncode == 2
    assert f"no run 'FO-99' in sqlite:///{db} (FAILOVER_DB_URL)" in missing_run.stderr
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    no_db = run_cli("report", "FO-1", cwd=empty)
    assert no_db.returncode == 2
    assert "no database at sqlite:///failover-bot.db (FAILOVER_DB_URL); nothing created" in no_db.stderr
    assert not list(empty.iterdir())
    other = run_cli("report", "FO-1", env={"FAILOVER_DB_URL": f"sqlite:///{empty / 'x.db'}"})
    assert f"no database at sqlite:///{empty / 'x.db'}" in other.stderr and not list(empty.iterdir())
    hidden = run_cli("report", "FO-1", env={"FAILOVER_DB_URL": "postgresql://bot:hunter2@127.0.0.1:1/nodb"})
    assert hidden.returncode == 2 and "127.0.0.1:1/nodb" in hidden.stderr and "hunter2" not in hidden.stderr


def test_report_names_people_through_slack_when_it_has_a_token(tmp_path: Path) -> None:
    from sandbox.slack_api import DEFAULT_TOKEN, FakeSlackApi

    db, run_id = _db_with_a_run(tmp_path)
    with FakeSlackApi(users={"U0ALICE": "alice"}) as slack:
        named = run_cli(
            "report",
            run_id,
            env={
                "FAILOVER_DB_URL": f"sqlite:///{db}",
                "SLACK_BOT_TOKEN": DEFAULT_TOKEN,
                "SLACK_API_URL": slack.api_url,
            },
        )
        assert [c.params["user"] for c in slack.calls("users.info")] == ["U0ALICE"]  # asked once: cached
    assert named.returncode == 0, named.stderr
    assert "started by alice" in named.stdout and "U0ALICE" not in named.stdout
    assert DEFAULT_TOKEN not in named.stdout + named.stderr
    plain = run_cli("report", run_id, env={"FAILOVER_DB_URL": f"sqlite:///{db}"})
    assert "started by U0ALICE" in plain.stdout


def test_a_read_only_store_refuses_writes_and_does_not_migrate(tmp_path: Path) -> None:
    from bot.store.db import MissingDatabase

    db, run_id = _db_with_a_run(tmp_path)
    store = Store(f"sqlite:///{db}", read_only=True)
    try:
        with pytest.raises(sa.exc.OperationalError, match="readonly|read-only|query_only"):
            with store.session() as s:
                s.execute(sa.text("UPDATE runs SET state = 'aborted'"))
        with store.read_session() as s:
            assert s.execute(sa.text("SELECT state FROM runs")).scalar_one() == "active"
    finally:
        store.dispose()
    with pytest.raises(MissingDatabase):
        Store(f"sqlite:///{tmp_path / 'absent.db'}", read_only=True)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize("command", ["serve", "plan", "check", "simulate", "demo", "report", "readiness"])
def test_every_help_shows_an_example_and_the_environment_it_reads(command: str) -> None:
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"example:\n  failover-bot {command}" in proc.stdout or f"failover-bot {command} " in proc.stdout
    assert "example:" in proc.stdout and "environment:" in proc.stdout
    expected = {
        "serve": [
            "FAILOVER_CONFIG",
            "FAILOVER_DB_URL",
            "SLACK_BOT_TOKEN",
            "SLACK_SIGNING_SECRET",
            "SLACK_APP_TOKEN",
            "FAILOVER_WINRM_USER",
            "FAILOVER_ODBC_",
        ],
        "plan": ["FAILOVER_CONFIG", "FAILOVER_DB_URL"],
        "check": ["FAILOVER_CONFIG", "FAILOVER_WINRM_PASSWORD", "FAILOVER_ODBC_"],
        "simulate": ["FAILOVER_CONFIG", "FAILOVER_WINRM_USER"],
        "demo": [],
        "report": ["FAILOVER_DB_URL"],
        "readiness": ["FAILOVER_CONFIG", "FAILOVER_DB_URL", "FAILOVER_WINRM_USER", "SLACK_BOT_TOKEN"],
    }[command]
    for name in expected:
        assert name in proc.stdout, name


def test_demo_shows_no_info_lines(tmp_path: Path) -> None:
    from bot.config import load_config
    from sandbox.demo import EXAMPLE_CONFIG as DEMO_CONFIG
    from sandbox.demo import PortBusy, check_ports

    try:
        check_ports(load_config(DEMO_CONFIG))
    except PortBusy as exc:
        pytest.skip(f"the demo's fixed ports are taken by something else: {exc}")
    proc = run_cli("demo", "--quiet", "--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " INFO " not in proc.stdout + proc.stderr  # once the first screen was Alembic's plugin list
    assert " INFO " in (tmp_path / "demo" / "demo.log").read_text(encoding="utf-8")  # the log file keeps them
