"""`failover-bot demo`: the packaged example platform, one whole checked run end to end, and a clear refusal."""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from pathlib import Path

import pytest

from actions import settings_xml
from bot.cli import main
from bot.config import load_config
from sandbox import demo
from sandbox.demo import (
    EXAMPLE_CONFIG,
    Check,
    Demo,
    PortBusy,
    check_ports,
    expected_failback_ops,
    expected_failover_ops,
    run_demo,
)
from sandbox.rehearsal import CHANNEL
from tests.support.paths import EXAMPLE_CONFIG as SPEC_CONFIG


def test_packaged_example_config_is_the_spec_copy() -> None:
    assert EXAMPLE_CONFIG.read_bytes() == SPEC_CONFIG.read_bytes()
    assert demo.CHANNEL == CHANNEL  # the demo's names for the rendering match the rehearsal's channel


def test_expected_operations_follow_the_example_topology() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert expected_failover_ops(config, "site-a") == [("as-b", "service.stop"), ("as-b", "file.replace"),
                                                      ("as-b", "service.start"), ("as-b", "taskqueue.drop"),
                                                      ("as-b", "taskqueue.drop")]  # fmt: skip
    failback = Counter(expected_failback_ops(config, "site-a"))
    assert sum(failback.values()) == 19
    assert failback[("as-a", "service.stop")] == 2 and failback[("as-a", "taskqueue.drop")] == 1
    assert failback[("ss-a1", "service.restart")] == 2 and failback[("ms-b2", "service.start")] == 1
    assert failback[("as-b", "service.restart")] == 1 and failback[("as-b", "file.replace")] == 1


def test_verdict_fails_on_one_failed_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = Demo(quiet=True)
    d.check("After the failover", "as-b is the Master", True)
    d.check("After the failover", "task files consumed", False, "waiting: Failover.UpdateSettingsOnSS")
    assert demo.verdict(d, tmp_path, 1.0) == 1
    out = capsys.readouterr().out
    assert "✓ as-b is the Master" in out and "✗ task files consumed" in out
    assert "waiting: Failover.UpdateSettingsOnSS" in out and "1 of 2 checks failed" in out


def _guids(state: Path) -> list[str]:
    found = []
    for settings in state.glob("*/C/ProgramData/Attix5 Pro/*_Service/Settings.xml"):
        found.append(settings_xml.read_server_guid(settings.read_bytes()))
    return found


def _step_message(out: str, step: str) -> str:
    """The text of one step's message in the printed thread (up to the next reply)."""
    start = out.index(f"{step} · ")
    end = out.find("↳", start)
    return out[start : end if end != -1 else len(out)]


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        check_ports(load_config(EXAMPLE_CONFIG))
    except PortBusy as exc:
        pytest.skip(f"the demo's fixed ports are taken by something else: {exc}")
    out_dir = tmp_path / "demo"
    status = run_demo(out_dir, quiet=False)
    out = capsys.readouterr().out
    assert status == 0, out[-4000:]
    # the phases, both threads as they read in Slack, with people's names
    for phase in ("1 · Setting up", "2 · site-a goes down", "3 · Failover site-a → site-b", "4 · site-a comes back",
                  "5 · Failback to site-a", "6 · Audit reports", "── Verdict"):  # fmt: skip
        assert phase in out
    assert "Failover site-a → site-b · FO-1" in out
    assert "Failback site-b → site-a · FB-1" in out
    assert "Started by: @alice" in out and "U0ALICE" not in out and "U0BOB" not in out
    for step in ("B11", "B28"):
        assert "approved by @bob, @carol" in _step_message(out, step)
    for step in ("F0", "F8", "B1", "B9", "B33", "B37"):
        assert f"{step} · " in out
    assert "bob revealed the one-time password(s) for B9" in out
    # readiness: site-a going down is one alert; as-a back as a second Master is the split-brain alert
    assert "Readiness: 3 new problems" in out and "as-a* winrm" in out
    assert "@here 🚨 *Split brain*" in out and "Attix5ProAccountServer on as-a now" in out
    # the verdict: every check held
    assert "✗" not in out
    assert re.search(r"✓ all \d+ checks hold", out)
    # the audit reports and the state are in the out folder
    for run in ("FO-1", "FB-1"):
        report = out_dir / f"{run}.md"
        assert report.is_file() and f"# {run}:" in report.read_text(encoding="utf-8")
        assert "approved by: bob" in report.read_text(encoding="utf-8")  # as attached in Slack: names
        assert (out_dir / f"{run}-timeline.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert str(report) in out
    assert (out_dir / "platform" / "operations.jsonl").is_file()
    # two hosts ran as on a domain network: NTLM with sealed messages, and NTLM over validated HTTPS
    ran = load_config(out_dir / "failover.yml")
    assert (ran.host("as-b").winrm.transport, ran.host("as-b").winrm.url[:5]) == ("ntlm", "http:")
    assert ran.host("ms-b1").winrm.url.startswith("https://")
    assert ran.host("ms-b1").winrm.server_cert_validation == "validate"
    assert ran.host("ms-b1").winrm.ca_trust_path == str((out_dir / "platform" / "tls" / "ca.pem").resolve())
    touched = {(o["host"], o["outcome"]) for o in map(json.loads, (out_dir / "platform" / "operations.jsonl").open())}
    assert ("as-b", "ok") in touched and ("ms-b1", "ok") in touched
    assert "as-b speaks NTLM with WinRM message encryption" in out
    # nothing secret was printed: no ServerGuid, no one-time password
    guids = _guids(out_dir / "platform")
    assert len(guids) == 6
    lowered = out.lower()
    for guid in guids:
        assert guid.lower() not in lowered
        assert settings_xml.otp_from_guid(guid).lower() not in lowered
    # everything was stopped: the fixed ports are free again
    check_ports(load_config(EXAMPLE_CONFIG))


def test_a_taken_port_exits_2_saying_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", 45101))
            sock.listen()
            held = True
        except OSError:
            held = False  # taken already: the demo must refuse all the same
        status = main(["demo", "--quiet", "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert status == 2
    assert "is already in use" in err
    assert "another `failover-bot demo` or `failover-bot simulate` may be running" in err
    if held:
        assert "127.0.0.1:45101 (as-a's WinRM endpoint" in err
    assert not (tmp_path / "demo").exists()  # nothing was started or written


def test_a_used_out_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old.txt").write_text("a previous run", encoding="utf-8")
    assert run_demo(tmp_path, quiet=True) == 2
    assert "needs a new or empty folder" in capsys.readouterr().err


def test_check_in_the_verdict_is_grouped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = Demo(quiet=True)
    for group, what in (("A", "one"), ("B", "two"), ("A", "three")):
        d.checks.append(Check(group, what, True))
    assert demo.verdict(d, tmp_path, 0.5) == 0
    out = capsys.readouterr().out
    assert out.index("  A\n") < out.index("✓ three") < out.index("  B\n")
