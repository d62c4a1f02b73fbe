"""The read-only and operator sub-commands of /failover, Slack's limits and its rate limiting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.blocks.cards import status_card, step_card
from bot.config import load_config
from bot.runs.service import RunService
from bot.store.db import Store, utcnow
from sandbox.rehearsal import Rehearsal, rehearsal
from sandbox.slack_api import block_problems
from tests.support.platform import free_port, write_config

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[Rehearsal]:
    with rehearsal(write_config(tmp_path / "cfg"), tmp_path / "state") as r:
        yield r


def _ephemeral(rh: Rehearsal, user: str, needle: str) -> str:
    found: list[str] = []

    def seen() -> bool:
        found[:] = [e.text for e in rh.slack.ephemerals(user) if needle in e.text]
        return bool(found)

    rh.wait_until(f"an answer containing {needle!r}", seen, timeout=20)
    return found[-1]


def test_help_status_plan_check_abort_and_report(rh: Rehearsal) -> None:
    bob, alice = rh.person(BOB), rh.person(ALICE)
    started = time.monotonic()
    assert bob.command("help").status == 200
    assert time.monotonic() - started < 3  # acknowledged well inside Slack's 3 s
    assert "`start &lt;site&gt;" in _ephemeral(rh, BOB, "Usage")  # shown as typed, not as a link
    bob.command("status")
    assert "no run yet" in _ephemeral(rh, BOB, "no run")
    bob.command("plan start site-a scope=account")
    plan = _ephemeral(rh, BOB, "F4")
    assert "F5" not in plan and "as-b" in plan
    bob.command("check site-a")
    assert "all checks passed" in _ephemeral(rh, BOB, "check site-a:")
    _ephemeral(rh, BOB, "StoragePlatform")
    # the table may take several messages (Slack's section limit): every host is in one of them
    table = "\n".join(e.text for e in rh.slack.ephemerals(BOB) if "PASS" in e.text)
    assert "as-a" in table and "ms-b2" in table and "StoragePlatform" in table
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)
    fo = rh.start(ALICE, "start site-a")
    rh.settled(fo)
    bob.command("status")
    status = _ephemeral(rh, BOB, fo)
    assert "Current step: *F1*" in status and "Waiting on an approver" in status
    assert "open the incident thread" in status
    bob.command("abort")  # bob is an operator too in the example config
    _ephemeral(rh, BOB, f"Aborted {fo}")
    assert rh.service.get_run(fo).state == "aborted"
    rh.wait_until(
        "the abort broadcast", lambda: any("aborted" in m.text for m in rh.slack.channel_messages("C0INCIDENT"))
    )
    alice.command(f"report {fo}")
    _ephemeral(rh, ALICE, "Posted the report")
    # the summary (once at the abort, once on request), each with the full report attached as a file
    rh.wait_until("two summaries", lambda: sum("*Audit chain:* intact" in str(m.blocks) for m in rh.thread(fo)) == 2)
    run = rh.service.get_run(fo)
    rh.wait_until("the reports attached", lambda: len(rh.slack.files(run.channel, run.thread_ts)) == 4)
    assert b"audit chain: intact" in (rh.slack.files(run.channel, run.thread_ts)[-2].content or b"")
    alice.command("abort")
    assert "no active run" in _ephemeral(rh, ALICE, "no active run")


def test_rate_limited_slack_is_retried_after_retry_after(rh: Rehearsal) -> None:
    rh.slack.limit("chat.postMessage", times=1, retry_after=1)
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)
    fo = rh.start(ALICE, "start site-a scope=account")
    rh.settled(fo)
    calls = rh.slack.calls("chat.postMessage")
    assert calls[0].status == 429 and calls[1].status == 200
    assert (calls[1].time - calls[0].time) >= 0.9  # waited as Slack asked
    assert rh.thread(fo)  # the status card made it


def test_fifty_storage_servers_fit_slacks_limits(tmp_path: Path) -> None:
    raw = yaml.safe_load((write_config(tmp_path / "base")).read_text())
    a, b = raw["sites"]["site-a"], raw["sites"]["site-b"]
    a["storage_servers"], b["storage_servers"] = [], []
    for i in range(50):
        b["storage_servers"].append(
            {
                "name": f"ms-b{i}",
                "address": f"127.0.21.{i + 1}",
                "port": 443,
                "winrm": f"http://127.0.0.1:{free_port()}/wsman",
            }
        )
        a["storage_servers"].append(
            {
                "name": f"ss-a{i}",
                "address": f"127.0.11.{i + 1}",
                "port": 8443,
                "winrm": f"http://127.0.0.1:{free_port()}/wsman",
                "mirror": f"ms-b{i}",
            }
        )
    path = tmp_path / "big.yml"
    path.write_text(yaml.safe_dump(raw))
    store = Store(f"sqlite:///{tmp_path / 'big.db'}")
    service = RunService(store, load_config(path))
    for direction in ("failover", "failback"):
        run = service.open_run(direction, "site-a", [], ALICE, "C0INCIDENT")
        view = service.view(run.id)
        assert block_problems(status_card(view, utcnow())) == []
        for sv in view.steps:
            blocks = step_card(view, sv)
            assert block_problems(blocks) == [], (sv.step.id, block_problems(blocks))
            if sv.step.fanout and sv.step.id in ("F6", "B11"):
                text = str(blocks)
                assert "ss-a0" in text and "ss-a49" in text  # every target listed
        service.abort(run.id, ALICE, "test")
    store.dispose()


def test_every_command_is_in_the_audit_log(rh: Rehearsal) -> None:
    from bot.report import build_report

    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)
    fo = rh.start(ALICE, "start site-a scope=account")
    rh.settled(fo)
    rh.person(BOB).command("status")
    rh.person(BOB).command(f"report {fo}")
    rh.person(CAROL).command("plan failback site-a")

    def logged() -> list[str]:
        return [
            e["detail"].get("command", "") for e in build_report(rh.runtime.store, fo).events if e["event"] == "command"
        ]

    rh.wait_until("three more commands in the log", lambda: len(logged()) >= 4, timeout=20)
    commands = logged()
    assert commands[0] == "/failover start site-a scope=account"
    assert {"/failover status", f"/failover report {fo}", "/failover plan failback site-a"} <= set(commands)
