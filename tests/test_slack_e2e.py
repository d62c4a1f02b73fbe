"""The product as its users meet it: signed Slack requests through the real HTTP endpoint, a fake Slack
Web API at the wire, and the simulated platform over real WinRM."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions import settings_xml
from bot.blocks.render import render_blocks, render_thread
from bot.report import build_report
from bot.runs.machine import StepState
from bot.slack_ids import ActionId
from sandbox.rehearsal import Rehearsal, rehearsal
from tests.support.platform import write_config

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[Rehearsal]:
    # as-b over NTLM with message encryption, ms-b1 over HTTPS validated against the platform's test CA
    cfg = write_config(tmp_path / "cfg", secure_state=tmp_path / "state")
    with rehearsal(
        cfg, tmp_path / "state", people={ALICE: "alice", BOB: "bob", CAROL: "carol", "U0MALLORY": "mallory"}
    ) as r:
        yield r


def _settings(r: Rehearsal, host: str) -> bytes:
    sub = "AS_Service" if host.startswith("as-") else "SS_Service"
    return (r.state_dir / host / "C" / "ProgramData" / "Attix5 Pro" / sub / "Settings.xml").read_bytes()


def _services(r: Rehearsal, host: str) -> dict[str, str]:
    return dict(json.loads((r.state_dir / host / "services.json").read_text()))


def _queue_empty(r: Rehearsal, host: str) -> bool:
    folder = r.state_dir / host / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "TaskQueue"
    return not any(folder.iterdir())


def _roles(r: Rehearsal) -> dict[str, str]:
    with sqlite3.connect(r.state_dir / "StoragePlatform.site-b.db") as db:
        return dict(db.execute("SELECT Name, Role FROM BackupServer").fetchall())


def _changing_ops(r: Rehearsal) -> list[tuple[str, str]]:
    return [
        (o["host"], o["operation"])
        for o in r.operations()
        if o["operation"] in ("service.stop", "service.start", "service.restart", "file.replace", "taskqueue.drop")
        and o.get("outcome") == "ok"
    ]


def test_full_failover_and_failback_by_three_people(rh: Rehearsal) -> None:
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)  # site-a is down
    fo = rh.start(ALICE, "start site-a")
    view = rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
    assert view.run.state == "completed"
    # the platform after the failover
    assert settings_xml.read_is_slave(_settings(rh, "as-b")) is False
    assert _services(rh, "as-b")["Attix5ProAccountServer"] == "Running"
    rh.wait_until("task files consumed on as-b", lambda: _queue_empty(rh, "as-b"), timeout=10)
    assert _roles(rh)["as-b"] == "MasterAccountServer"
    ops = _changing_ops(rh)
    assert ops == [
        ("as-b", "service.stop"),
        ("as-b", "file.replace"),
        ("as-b", "service.start"),
        ("as-b", "taskqueue.drop"),
        ("as-b", "taskqueue.drop"),
    ]
    # the thread tells the story
    rh.wait_until("the status card to say completed", lambda: "completed" in json.dumps(rh.thread(fo)[0].blocks))
    text = render_thread(rh.thread(fo))
    assert "Failover site-a → site-b · FO-1" in text
    for step in ("F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"):
        assert f"{step} ·" in text
    # a finished step collapses to one line; while it was current its card showed the Console values
    f6 = rh.message_of(fo, "F6")
    first = render_blocks(f6.history[0][1] if f6.history else f6.blocks)
    assert "127.0.20.21:443" in first and "127.0.20.22:443" in first
    assert "127.0.20.21:443" not in render_blocks(f6.blocks)
    assert "completed" in text and "[!Abort run!]" not in text  # finished: no buttons left

    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host)  # site-a is back
    fb = rh.start(ALICE, "failback site-a")
    view = rh.run_through(fb, initiator=ALICE, approvers=(BOB, CAROL))
    assert view.run.state == "completed", view.current
    assert settings_xml.read_is_slave(_settings(rh, "as-a")) is False
    assert settings_xml.read_is_slave(_settings(rh, "as-b")) is True
    for host in ("as-a", "as-b", "ss-a1", "ss-a2", "ms-b1", "ms-b2"):
        assert set(_services(rh, host).values()) == {"Running"}, host
    rh.wait_until("task file consumed on as-a", lambda: _queue_empty(rh, "as-a"), timeout=10)
    roles = _roles(rh)
    assert roles["as-a"] == "MasterAccountServer" and roles["as-b"] == "SlaveAccountServer"
    fb_ops = _changing_ops(rh)[5:]
    # each host operation the failback calls for happened exactly once (B1 B2 B5 B8 B16-B19 B21 B22 B24
    # B29 B31 B32 B35); fan-out targets run in parallel, so compare as multisets
    expected = [
        ("as-a", "service.stop"),
        ("as-a", "file.replace"),
        ("as-a", "service.start"),
        ("ss-a1", "service.restart"),
        ("ss-a2", "service.restart"),
        ("as-b", "service.stop"),
        ("as-a", "service.stop"),
        ("as-a", "file.replace"),
        ("as-a", "service.start"),
        ("as-b", "file.replace"),
        ("as-b", "service.start"),
        ("as-b", "service.restart"),
        ("ms-b1", "service.stop"),
        ("ms-b2", "service.stop"),
        ("ss-a1", "service.restart"),
        ("ss-a2", "service.restart"),
        ("ms-b1", "service.start"),
        ("ms-b2", "service.start"),
        ("as-a", "taskqueue.drop"),
    ]
    assert Counter(fb_ops) == Counter(expected)
    # destructive steps were approved by two different people, never the initiator
    for step in ("B11", "B28"):
        sv = rh.service.view(fb).step(step)
        assert sorted(sv.approvers) == [BOB, CAROL]
    # OTPs were revealed only ephemerally, never in the thread or channel
    ephemerals = rh.slack.ephemerals()
    assert any("One-time password" in e.text for e in ephemerals)
    guids = [settings_xml.read_server_guid(_settings(rh, h)) for h in ("as-a", "ss-a1", "ss-a2", "ms-b1", "ms-b2")]
    public = "\n".join(
        m.text + json.dumps(m.blocks) for m in rh.slack.channel_messages("C0INCIDENT") + rh.thread(fo) + rh.thread(fb)
    )
    for guid in guids:
        assert settings_xml.otp_from_guid(guid) not in public
        assert guid not in public
    for secret in ("rehearsal-password", "sandbox-signing-secret", "xoxb-sandbox-token"):
        assert secret not in rh.slack.all_text()


def test_refusals(rh: Rehearsal) -> None:
    bob = rh.person(BOB)
    # bad signature and stale timestamp
    assert bob.command("status", bad_signature=True).status == 401
    assert bob.command("status", timestamp=int(time.time()) - 600).status == 401
    # unknown site, wrong channel, non-operator, unknown sub-command
    rh.person(ALICE).command("start site-z")
    rh.person(ALICE).command("start site-a", channel="C0RANDOM")
    rh.person("U0MALLORY").command("start site-a")
    rh.person(ALICE).command("explode")
    rh.wait_until("four refusals", lambda: len(rh.slack.ephemerals()) >= 4)
    texts = [e.text for e in rh.slack.ephemerals()]
    assert any("unknown site 'site-z'" in t for t in texts)
    assert any("only in the incident channel" in t for t in texts)
    assert any("is for operators" in t for t in texts)
    assert any("Unknown command `explode`" in t for t in texts)
    assert rh.service.last_run() is None  # nothing started

    # split-brain guard: site-a's AccountServer is still a running Master
    fo = rh.start(ALICE, "start site-a scope=account")
    view = rh.settled(fo)
    assert view.current.step.id == "F0" and view.current.state == StepState.FAILED
    assert "split-brain" in (view.current.row.error or "")
    # Skip on a required step is refused
    rh.click(BOB, fo, "F0", ActionId.MARK_DONE, reason="as-a is cut off from the network")
    with pytest.raises(LookupError):
        rh.click(BOB, fo, "F0", ActionId.SKIP, reason="nope", wait_for_button=0.5)  # no Skip button on a required step
    # a non-approver's click is refused and audited
    rh.click("U0MALLORY", fo, "F0", ActionId.MARK_DONE, reason="me too")
    rh.wait_until("mallory refused", lambda: any("Only approvers" in e.text for e in rh.slack.ephemerals("U0MALLORY")))
    # the same person twice counts once
    rh.click(BOB, fo, "F0", ActionId.MARK_DONE, reason="again")
    rh.wait_until("bob told once", lambda: any("(1 of 2)" in e.text for e in rh.slack.ephemerals(BOB)))
    assert rh.service.view(fo).step("F0").state == StepState.FAILED
    rh.click(CAROL, fo, "F0", ActionId.MARK_DONE, reason="confirmed: as-a isolated")
    rh.wait_until("F0 marked done", lambda: rh.service.view(fo).step("F0").state == StepState.MARKED_DONE)
    view = rh.settled(fo)
    assert view.step("F0").state == StepState.MARKED_DONE and view.current.step.id == "F1"
    # a replayed click (same delivery again) and a Slack retry change nothing
    msg = rh.message_of(fo, "F1")
    resp = bob.click(msg, str(ActionId.APPROVE))
    assert resp.status == 200
    assert bob.redeliver(retry_num=1).status == 200  # Slack's retry of the same delivery
    assert bob.redeliver().status == 200  # the same click replayed
    rh.wait_until("F1 done", lambda: rh.service.view(fo).step("F1").state == StepState.SUCCEEDED)
    rh.settled(fo)
    stops = [o for o in rh.operations() if o["operation"] == "service.stop" and o["host"] == "as-b"]
    assert len(stops) == 1
    # a click on a finished step is answered and changes nothing
    bob.click(msg, str(ActionId.APPROVE))
    rh.wait_until(
        "finished-step refusal",
        lambda: any("no longer current" in e.text or "does not need" in e.text for e in rh.slack.ephemerals(BOB)),
    )
    events = build_report(rh.runtime.store, fo).events
    assert [e["event"] for e in events].count("refused") >= 2
    assert len([e for e in events if e["event"] == "approval" and e["step_id"] == "F1"]) == 1


def test_destructive_step_rules(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    with rehearsal(cfg, tmp_path / "state") as r:
        for host in ("ss-a1", "ss-a2"):
            r.faults(host, refuse=True)  # only the StorageServers failed; as-a stays the Master
        fo = r.start(ALICE, "start site-a scope=storage")
        assert r.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL)).run.state == "completed"
        for host in ("ss-a1", "ss-a2"):
            r.faults(host)
        fb = r.start(ALICE, "failback site-a")  # defaults to the failover's scope: storage
        assert r.service.get_run(fb).scope == "storage"
        # walk to B11, the first destructive step
        for _ in range(100):
            view = r.settled(fb)
            if view.current.step.id == "B11":
                break
            r.act_once(fb, view.current, (BOB, CAROL))
        msg = r.message_of(fb, "B11")
        approve = [
            e
            for b in msg.blocks
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"].startswith(str(ActionId.APPROVE))
        ][0]
        assert approve["style"] == "danger" and "confirm" not in approve  # the modal is the confirmation
        card = json.dumps(msg.blocks, ensure_ascii=False)
        assert "DELETE mirror registration ms-b1 at 127.0.20.21:443 · KEEP StorageServer entry ss-a1" in card
        assert "0 of 2" in approve["text"]["text"]
        r.click(ALICE, fb, "B11", ActionId.APPROVE)  # the initiator may not approve a delete: no form opens
        r.wait_until(
            "initiator refused", lambda: any("You started this run" in e.text for e in r.slack.ephemerals(ALICE))
        )
        assert r.slack.views(ALICE, open_only=False) == []
        modal = r.click(BOB, fb, "B11", ActionId.APPROVE)
        assert modal is not None and modal.callback_id == "modal_approve"
        assert "127.0.20.21:443" in json.dumps(modal.view["blocks"])  # names what will be deleted
        assert "This is a deletion" in json.dumps(modal.view["blocks"])
        assert json.loads(modal.private_metadata)["round"] == 0
        r.wait_until("1 of 2 shown", lambda: "1 of 2" in json.dumps(r.message_of(fb, "B11").blocks))
        r.click(BOB, fb, "B11", ActionId.APPROVE)  # same person twice counts once
        r.wait_until("bob already", lambda: any("already approved" in e.text for e in r.slack.ephemerals(BOB)))
        assert r.service.view(fb).step("B11").state == StepState.AWAITING_APPROVAL
        r.click(CAROL, fb, "B11", ActionId.APPROVE)
        r.wait_until("approved", lambda: r.service.view(fb).step("B11").state == StepState.APPROVED)
