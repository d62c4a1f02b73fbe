"""The post-incident report: per step who approved and who performed, waiting apart from working, overrides,
decisions and follow-ups; in Slack a summary with the full report and its timeline attached (files_upload_v2);
the timeline drawn in a short-lived child process; the Slack stand-in's upload flow as strict as Slack's."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import load_config
from bot.report import build_report
from bot.runs.service import RunService
from bot.slack_ids import ActionId
from bot.store import audit
from bot.store.db import Store
from sandbox.rehearsal import Rehearsal, rehearsal
from sandbox.slack_api import DEFAULT_TOKEN, FakeSlackApi
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.platform import write_config

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
PNG = b"\x89PNG\r\n\x1a\n"
NAMES = {ALICE: "alice", BOB: "bob", CAROL: "carol"}


# --------------------------------------------------------------------------- the full report, from the audit log


class _Clock:
    """The audit log's clock, in seconds after ``base`` (the run's start)."""

    def __init__(self, base: datetime) -> None:
        self.base = base.replace(tzinfo=base.tzinfo or UTC)
        self.now = self.base

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = self.base + timedelta(seconds=seconds)


def test_the_report_tells_each_step_and_keeps_waiting_apart_from_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    service = RunService(store, load_config(EXAMPLE_CONFIG))
    run = service.open_run("failover", "site-a", ["scope=all"], ALICE, "C0INCIDENT")
    clock = _Clock(run.created_at)
    monkeypatch.setattr(audit, "utcnow", clock)

    def event(t: float, actor: str, name: str, step: str, **detail: object) -> None:
        clock.at(t)
        audit.record(store, run.id, actor, name, step_id=step, detail=detail)

    # F0: the split-brain guard failed; two people pushed past it with their reasons
    event(0, "bot", "step.post", "F0", **{"from": "pending", "to": "awaiting_approval"})
    event(1, "bot", "step.fail", "F0", error="split-brain: as-a answers and is still a running Master")
    event(30, BOB, "mark_done.vote", "F0", reason="as-a is cut off from the network")
    event(40, CAROL, "mark_done.vote", "F0", reason="confirmed by the network team")
    event(40, CAROL, "step.mark_done", "F0", reason="confirmed by the network team")
    # F2: approved by bob, run by the bot on as-b
    event(50, "bot", "step.post", "F2")
    event(55, BOB, "approval", "F2", round=0)
    event(55, BOB, "step.approve", "F2", approvals=1)
    event(55, "bot", "step.claim", "F2", intent="execute")
    clock.at(55)
    audit.record(store, run.id, "bot", "execution.started", step_id="F2", target="as-b", detail={"host": "as-b"})
    event(57, "bot", "step.succeed", "F2", result={"summary": "IsSlave set to False on as-b"})
    # F6: a Console step: posted, a reminder, carol takes it ("I'm on it"), an escalation, Done three minutes later
    event(60, "bot", "step.post", "F6")
    event(90, "bot", "reminder", "F6", attempt=0, number=1)
    event(120, CAROL, "step.on_it", "F6", round=0)
    event(200, "bot", "escalation", "F6", attempt=0, number=1)
    event(300, CAROL, "step.done", "F6")
    # F8: done, recording that agents' DNS was redirected
    event(310, "bot", "step.post", "F8")
    event(320, CAROL, "step.done", "F8", choice="done_with_dns_redirect")
    service.record_fact(run.id, "dns_redirected", "done_with_dns_redirect")
    service.record_fact(run.id, "guid:as-a", "0f5dcbab-122d-40ea-99a4-2bae9fd088a1")  # a working value, not a decision
    monkeypatch.undo()
    service.abort(run.id, ALICE, "rehearsal over")

    report = build_report(store, run.id)
    store.dispose()
    f6 = next(s for s in report.steps if s.step_id == "F6")
    assert (f6.waited_on_people_s, f6.person_working_s, f6.executing_s) == (60.0, 180.0, 0.0)
    assert f6.on_it_by == [CAROL] and f6.performed_by == [CAROL]
    assert (f6.reminders, f6.escalations) == (1, 1)
    f2 = next(s for s in report.steps if s.step_id == "F2")
    assert (f2.waited_on_people_s, f2.executing_s) == (5.0, 2.0)
    assert f2.approved_by == [BOB] and f2.performed_by == ["bot"] and f2.hosts == ["as-b"]
    assert f2.result == "IsSlave set to False on as-b"
    assert f2.title == "Set IsSlave to False in Settings.xml"
    assert f6.segments == [("waiting", 60.0, 120.0), ("working", 120.0, 300.0)]  # the timeline's bars
    (override,) = report.overrides
    assert override.split_brain and override.users == [BOB, CAROL]
    assert override.reasons == ["as-a is cut off from the network", "confirmed by the network team"]
    assert report.decisions() == ["agents' DNS was redirected to the partner site (F8)"]
    assert "revert the DNS redirect at failback" in report.follow_ups()
    assert any(f.startswith("the run was aborted") for f in report.follow_ups())

    md = report.to_markdown(lambda u: NAMES.get(u, u))
    assert "**⚠️ SPLIT-BRAIN GUARD OVERRIDDEN at F0** by bob, carol: as-a is cut off from the network" in md
    assert "### F6 · Change each StorageServer's address to its MirrorServer — done" in md
    assert "- waiting for approval: 1 min 00 s; person working: 3 min 00 s; bot executing: 0.0 s" in md
    assert "- “I'm on it”: carol" in md and "- reminders: 1; escalations: 1" in md
    assert "- approved by: bob; performed by: the bot on as-b" in md
    assert "started by alice" in md and "U0CAROL" not in md  # people by name where Slack tells
    assert "0f5dcbab" not in md and "guid" not in md  # the bot's working values are not decisions
    data = json.loads(report.to_json())
    assert data["person_working_s"] == 180.0 and data["overrides"][0]["split_brain"] is True
    assert report.to_markdown().count("U0CAROL") > 0  # without Slack: IDs


def test_a_failback_that_left_mirroring_disabled_says_so(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    service = RunService(store, load_config(EXAMPLE_CONFIG))
    run = service.open_run("failback", "site-a", ["scope=all"], ALICE, "C0INCIDENT")
    audit.record(store, run.id, "bot", "step.post", step_id="B34", detail={})
    audit.record(store, run.id, CAROL, "step.done", step_id="B34", detail={"choice": "left_disabled"})
    service.record_fact(run.id, "mirroring", "left_disabled")
    report = build_report(store, run.id)
    store.dispose()
    assert report.decisions() == ["mirroring was left disabled (B34)"]
    assert report.follow_ups()[0].startswith("mirroring left disabled: re-enable it in the Console")
    md = report.to_markdown()
    assert "- mirroring was left disabled (B34)" in md and "- choice: left_disabled" in md


# --------------------------------------------------------------------------- the timeline picture


def test_the_timeline_is_drawn_by_a_child_process_and_never_loaded_here(tmp_path: Path) -> None:
    script = """
import json, subprocess, sys
from bot.render import timeline
calls = []
real = subprocess.run
def spy(args, **kw):
    calls.append(list(args))
    return real(args, **kw)
subprocess.run = spy
png = timeline.render_png({"title": "t", "end": 10, "steps": [{"id": "F1", "title": "x", "segments": [
    {"kind": "waiting", "start": 0, "end": 4}, {"kind": "working", "start": 4, "end": 6},
    {"kind": "executing", "start": 6, "end": 9}]}], "milestones": [{"label": "Master promoted", "at": 9}]})
print(json.dumps({"png": png[:8].hex(), "size": len(png), "calls": calls,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib")}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert bytes.fromhex(out["png"]) == PNG and out["size"] > 5000
    assert out["calls"] == [[sys.executable, "-m", "bot.render.timeline"]]
    assert out["loaded"] == []  # the process that asked for the picture never imported matplotlib


# --------------------------------------------------------------------------- Slack: summary, report and picture


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[Rehearsal]:
    cfg = write_config(tmp_path / "cfg")
    with rehearsal(cfg, tmp_path / "state", people={**NAMES, "U0MALLORY": "mallory"}) as r:
        yield r


def _report_posts(r: Rehearsal, run_id: str, count: int) -> tuple[list[object], list[object]]:
    run = r.service.get_run(run_id)
    summaries = lambda: [m for m in r.thread(run_id) if m.text.startswith(("✅ Report of", "🛑 Report of"))]  # noqa: E731
    r.wait_until(f"{count} report(s) of {run_id}", lambda: len(r.slack.files(run.channel, run.thread_ts)) >= 2 * count)
    return summaries(), r.slack.files(run.channel, run.thread_ts)


def test_a_finished_run_posts_its_summary_report_and_timeline_in_its_thread(rh: Rehearsal) -> None:
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)
    fo = rh.start(ALICE, "start site-a")
    view = rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL), choices={"F8": "done_with_dns_redirect"})
    assert view.run.state == "completed"
    summaries, files = _report_posts(rh, fo, 1)
    (summary,) = summaries
    text = json.dumps(summary.blocks)
    assert summary.text == f"✅ Report of {fo}: Failover of site-a — completed"
    assert "*Duration:*" in text and "*Master promoted after:*" in text and "not reached" not in text
    assert "agents' DNS was redirected to the partner site (F8)" in text
    assert "revert the DNS redirect at failback" in text  # follow-up
    assert "*Started by:* alice" in text
    assert [f.filename for f in files] == [f"{fo}-report.md", f"{fo}-timeline.png"]
    md, png = (f.content or b"" for f in files)
    assert png.startswith(PNG) and files[1].alt_txt and files[1].length == len(png)
    report = md.decode("utf-8")
    assert "### F2 · Set IsSlave to False in Settings.xml — succeeded" in report
    assert "- approved by: bob; performed by: the bot on as-b" in report
    assert "U0BOB" not in report  # names through users.info
    # the upload went the way Slack wants it: URL, bytes, completion in the thread
    calls = [c.method for c in rh.slack.calls() if c.method.startswith(("files.", "upload"))]
    assert calls == ["files.getUploadURLExternal", "files.getUploadURLExternal", "upload", "upload",
                     "files.completeUploadExternal"]  # fmt: skip
    (complete,) = rh.slack.calls("files.completeUploadExternal")
    run = rh.service.get_run(fo)
    assert complete.params["channel_id"] == run.channel and complete.params["thread_ts"] == run.thread_ts
    assert len(rh.slack.calls("users.info")) <= 3  # cached: once per person
    assert "matplotlib" not in sys.modules  # the bot (in this process) drew the PNG in a child process
    # once only: more changes of the finished run post nothing new
    rh.runtime.engine.changed(fo, "again")
    rh.runtime.reports.close()
    assert len(rh.slack.calls("files.completeUploadExternal")) == 1
    assert [e["event"] for e in build_report(rh.runtime.store, fo).events].count("report.posted") == 1


def test_failover_report_posts_it_again_and_an_override_stands_out(rh: Rehearsal) -> None:
    fo = rh.start(ALICE, "start site-a scope=account")  # as-a is still a running Master: F0 fails
    view = rh.settled(fo)
    assert view.current.step.id == "F0" and "split-brain" in (view.current.row.error or "")
    rh.click(BOB, fo, "F0", ActionId.MARK_DONE, reason="as-a is isolated <!channel>")
    rh.click(CAROL, fo, "F0", ActionId.MARK_DONE, reason="confirmed by the network team")
    rh.wait_until("F0 marked done", lambda: rh.service.view(fo).step("F0").state == "marked_done")
    rh.person(ALICE).command("abort rehearsal over", channel="C0INCIDENT")
    summaries, _ = _report_posts(rh, fo, 1)
    text = json.dumps(summaries[0].blocks)
    assert summaries[0].text.startswith(f"🛑 Report of {fo}")
    assert "Split-brain guard overridden at F0* by bob, carol" in text
    assert "as-a is isolated &lt;!channel&gt;" in text and "<!channel>" not in text  # people's text stays inert
    assert "the run was aborted" in text and "*Aborted:* rehearsal over" in text
    # /failover report posts it again on request
    resp = rh.person(BOB).command(f"report {fo}", channel="C0INCIDENT")
    assert resp.status == 200
    summaries, files = _report_posts(rh, fo, 2)
    assert len(summaries) == 2 and len(files) == 4
    rh.wait_until(  # the answer follows the uploads over response_url: it may arrive a moment later
        "Bob's answer", lambda: any("Posted the report" in e.text for e in rh.slack.ephemerals(BOB))
    )


# --------------------------------------------------------------------------- the stand-in is as strict as Slack


@pytest.fixture
def slack() -> Iterator[FakeSlackApi]:
    with FakeSlackApi(channels={"C0INCIDENT": "incident"}) as fake:
        yield fake


def test_the_stand_in_upload_flow_refuses_what_slack_refuses(slack: FakeSlackApi) -> None:
    client = WebClient(token=DEFAULT_TOKEN, base_url=slack.api_url)
    root = client.chat_postMessage(channel="C0INCIDENT", text="thread")["ts"]
    reply = client.chat_postMessage(channel="C0INCIDENT", text="reply", thread_ts=root)["ts"]
    for args in ({"filename": "x.md"}, {"length": 3}, {"filename": "x.md", "length": 0}):
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            client.api_call("files.getUploadURLExternal", params=args)
    got = client.files_getUploadURLExternal(filename="x.md", length=5)
    with pytest.raises(SlackApiError, match="file_upload_incomplete"):  # the bytes never arrived
        client.files_completeUploadExternal(files=[{"id": got["file_id"]}], channel_id="C0INCIDENT")
    assert _upload(got["upload_url"], b"toolong") == 400  # not the length announced
    with pytest.raises(SlackApiError, match="file_not_found"):
        client.files_completeUploadExternal(files=[{"id": "F99999999"}], channel_id="C0INCIDENT")
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.api_call("files.completeUploadExternal", params={"channel_id": "C0INCIDENT"})  # no files
    # the whole flow through slack_sdk: a reply's ts is refused, a thread needs its channel
    with pytest.raises(SlackApiError, match="invalid_thread_ts"):
        client.files_upload_v2(channel="C0INCIDENT", thread_ts=reply, content="hello", filename="a.md")
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.files_upload_v2(thread_ts=root, content="hello", filename="a.md")
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.files_upload_v2(channel="C0NOWHERE", content="hello", filename="a.md")
    done = client.files_upload_v2(channel="C0INCIDENT", thread_ts=root, content="hello", filename="a.md", title="A")
    assert done["file"]["name"] == "a.md"
    (shared,) = slack.files("C0INCIDENT", root)
    assert (shared.content, shared.title) == (b"hello", "A")
    assert slack.thread("C0INCIDENT", root)[-1].files == [{"id": shared.id, "name": "a.md", "title": "A"}]
    # a file completes once; its upload URL takes bytes once
    with pytest.raises(SlackApiError, match="file_not_found"):
        client.files_completeUploadExternal(files=[{"id": shared.id}], channel_id="C0INCIDENT")
    assert _upload(shared.upload_url, b"hello") == 404


def _upload(url: str, data: bytes) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data=data, method="POST"), timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
