"""The bot's process is SIGKILLed at the worst moments of a failover and started again on the same state.

Each time the run goes on: approvals given before the crash are kept, a step that was running is
settled by its read-only probe or by people, the thread catches up, and the simulated platform's
``operations.jsonl`` shows every host operation performed exactly once. The run's audit report then
reads as a post-incident timeline, and a tampered audit row makes ``failover-bot report`` fail.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bot.blocks.render import render_thread
from bot.runs.machine import StepState
from bot.slack_ids import ActionId, ButtonRef
from sandbox.people import buttons, menu_options
from tests.support.paths import ROOT
from tests.support.serve_process import Served, ServeProcess, served

ALICE, BOB, CAROL, MALLORY = "U0ALICE", "U0BOB", "U0CAROL", "U0MALLORY"
FAILOVER_CHANGES = [
    ("as-b", "service.stop"),  # F1
    ("as-b", "file.replace"),  # F2
    ("as-b", "service.start"),  # F3
    ("as-b", "taskqueue.drop"),  # F4
    ("as-b", "taskqueue.drop"),  # F7
]


def kill_when(h: Served, bot: ServeProcess, what: str, moment: Callable[[], bool], timeout: float = 30.0) -> None:
    """SIGKILL the bot as soon as ``moment`` is true (polled every few milliseconds, with a deadline)."""
    deadline = time.monotonic() + timeout
    while not moment():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached the moment: {what}\n{bot.log_tail()}")
        time.sleep(0.005)
    bot.kill()


def step_state(h: Served, run_id: str, step_id: str) -> str:
    return str(h.service.view(run_id).step(step_id).state)


def step_text(h: Served, run_id: str, step_id: str) -> str:
    return render_thread([h.message_of(run_id, step_id)])


def task_queue_empty(h: Served) -> bool:
    folder = h.state_dir / "as-b" / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "TaskQueue"
    return not any(folder.iterdir())


def test_sigkill_at_the_worst_moments_and_the_run_still_performs_every_operation_once(tmp_path: Path) -> None:
    people = {ALICE: "alice", BOB: "bob", CAROL: "carol", MALLORY: "mallory"}
    with served(tmp_path, people=people) as h:
        bot = h.replicas[0]
        for host in ("as-a", "ss-a1", "ss-a2"):
            h.faults(host, refuse=True)  # site-a is down
        fo = h.start(ALICE, "start site-a")
        assert h.settled(fo).current.step.id == "F1"

        # A click by someone who may not approve is refused (and audited); a second click counts once.
        h.click(MALLORY, fo, "F1", ActionId.APPROVE)
        h.wait_event(fo, "refused", "F1")

        # (1) Between two steps: F1 has just succeeded; the bot dies before it shows F2.
        h.click(BOB, fo, "F1", ActionId.APPROVE)
        kill_when(h, bot, "F1 succeeded", lambda: h.has_event(fo, "step.succeed", "F1"))
        bot.start()
        view = h.settled(fo)
        assert view.current.step.id == "F2" and view.current.state == StepState.AWAITING_APPROVAL
        assert "Approve" in step_text(h, fo, "F2")  # the thread caught up: F2 is shown with its buttons
        assert h.changing_operations() == FAILOVER_CHANGES[:1]

        # (2) After an approval is recorded, before the step runs: as-b answers slowly, so the bot is
        # still reading Settings.xml for the pre-run check when it dies.
        h.faults("as-b", latency_ms=800)
        h.click(BOB, fo, "F2", ActionId.APPROVE)
        kill_when(h, bot, "F2 approved", lambda: h.has_event(fo, "step.approve", "F2"))
        h.faults("as-b")
        assert not h.has_event(fo, "execution.started", "F2"), "the kill came too late: F2 had started"
        bot.start()  # the approval survived: F2 runs without anyone clicking again
        view = h.settled(fo)
        assert view.step("F2").state == StepState.SUCCEEDED and view.step("F2").approvers == [BOB]
        assert view.current.step.id == "F3"
        assert h.changing_operations() == FAILOVER_CHANGES[:2]

        # (3) While a host operation is in flight, after the host performed it but before the bot heard back.
        h.faults("as-b", latency_ms=600)
        h.click(BOB, fo, "F3", ActionId.APPROVE)
        kill_when(h, bot, "as-b started its service", lambda: ("as-b", "service.start") in h.changing_operations())
        h.faults("as-b")
        assert step_state(h, fo, "F3") == StepState.RUNNING
        assert h.has_event(fo, "execution.started", "F3") and not h.has_event(fo, "execution.finished", "F3")
        h.wait_quiet(0.8)
        bot.start()  # its probe finds the service Running: done, not run again
        view = h.settled(fo)
        assert view.step("F3").state == StepState.SUCCEEDED and view.current.step.id == "F4"
        assert "marked done without running it again" in step_text(h, fo, "F3")
        assert h.has_event(fo, "step.crash", "F3") and h.has_event(fo, "step.probe_in_place", "F3")
        assert h.changing_operations() == FAILOVER_CHANGES[:3]

        # (4) While a host operation is in flight, before the host performed it: nothing can tell whether
        # the task file was dropped, so people decide. Nothing runs until one of them does.
        h.faults("as-b", latency_ms=800)
        h.click(BOB, fo, "F4", ActionId.APPROVE)
        kill_when(h, bot, "F4 started", lambda: h.has_event(fo, "execution.started", "F4"))
        h.faults("as-b")
        h.wait_quiet(1.0)  # longer than the latency: a request still in flight has landed
        assert h.changing_operations() == FAILOVER_CHANGES[:3]
        bot.start()
        view = h.settled(fo)
        assert view.current.step.id == "F4" and view.current.state == StepState.UNKNOWN
        f4 = h.message_of(fo, "F4")
        offered = {b.action_id for b in buttons(f4.blocks)}
        assert str(ActionId.RETRY) in offered
        assert {ButtonRef.decode(o.value).extra for o in menu_options(f4.blocks)} == {"mark_done", "abort"}
        assert "outcome cannot be read back" in render_thread([f4])
        assert h.has_event(fo, "recovery.ask_people", "F4")
        time.sleep(0.3)
        assert h.changing_operations() == FAILOVER_CHANGES[:3]  # not re-run without a person
        h.click(CAROL, fo, "F4", ActionId.RETRY)  # a person checked as-b's task queue: nothing there
        h.wait_until("F4 retried", lambda: step_state(h, fo, "F4") != StepState.UNKNOWN)
        view = h.settled(fo)
        assert view.step("F4").state == StepState.SUCCEEDED
        assert h.changing_operations() == FAILOVER_CHANGES[:4]

        # F5 and F6 are Console steps for people.
        while h.settled(fo).current.step.id in ("F5", "F6"):
            h.act_once(fo, h.settled(fo).current, (BOB, CAROL))

        # (5) F7's task file reached the host and was consumed by the AccountServer before the bot came
        # back, so no read can prove it: two approvers mark it done with a reason.
        h.faults("as-b", latency_ms=600)
        h.click(BOB, fo, "F7", ActionId.APPROVE)
        kill_when(h, bot, "the second task file dropped", lambda: h.changing_operations() == FAILOVER_CHANGES)
        h.faults("as-b")
        h.wait_until("as-b consumed the task file", lambda: task_queue_empty(h), timeout=10)
        h.wait_quiet(0.8)
        bot.start()
        view = h.settled(fo)
        assert view.current.step.id == "F7" and view.current.state == StepState.UNKNOWN
        reason = "as-b's AccountServer log shows Failover.UpdateSettingsOnSS processed after the restart"
        h.click(BOB, fo, "F7", ActionId.MARK_DONE, reason=reason)
        h.click(BOB, fo, "F7", ActionId.MARK_DONE, reason=reason)  # the same person twice counts once
        h.wait_until("bob's repeated vote", lambda: h.has_event(fo, "mark_done.repeated", "F7"))
        assert step_state(h, fo, "F7") == StepState.UNKNOWN
        h.click(CAROL, fo, "F7", ActionId.MARK_DONE, reason=reason)
        h.wait_until("F7 marked done", lambda: step_state(h, fo, "F7") == StepState.MARKED_DONE)

        view = h.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
        assert view.run.state == "completed"
        assert view.step("F7").state == StepState.MARKED_DONE

        # Exactly once each, in the runbook's order, though the bot died five times.
        assert h.changing_operations() == FAILOVER_CHANGES
        assert bot.starts == 6
        # No approval was lost: every host step shows who approved it.
        for step_id in ("F1", "F2", "F3", "F4", "F7"):
            sv = view.step(step_id)
            assert sv.approvers or sv.mark_done_votes, step_id
        assert sorted(view.step("F7").mark_done_votes) == [BOB, CAROL]
        # The thread is up to date: one message per step, the card says completed.
        h.wait_until(
            "the status card to say completed", lambda: "completed" in json.dumps(h.thread(fo)[0].blocks), timeout=10
        )
        thread = h.thread(fo)
        for step_id in ("F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"):
            assert sum(1 for m in thread if m.text.startswith(f"{step_id} ")) == 1, step_id

        # The run's end posted its report with the timeline picture, drawn in a child process: the serve
        # process itself never mapped matplotlib (its extension modules would show in /proc/<pid>/maps).
        run = h.service.get_run(fo)
        h.wait_until("the report attached", lambda: len(h.slack.files(run.channel, run.thread_ts)) == 2, timeout=60)
        assert (h.slack.files(run.channel, run.thread_ts)[1].content or b"").startswith(b"\x89PNG")
        assert bot.proc is not None
        maps = Path(f"/proc/{bot.proc.pid}/maps")
        if maps.exists():
            assert "matplotlib" not in maps.read_text()

        _check_report(h, fo, tmp_path)


def _report(h: Served, run_id: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in h.replicas[0].env.items()}
    return subprocess.run(
        [sys.executable, "-m", "bot", "report", run_id, "--format", "md"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _check_report(h: Served, run_id: str, tmp_path: Path) -> None:
    """The report is a post-incident timeline; altering one audit row makes the CLI say so and fail."""
    done = _report(h, run_id)
    assert done.returncode == 0, done.stderr
    md = done.stdout
    assert "audit chain: intact" in md
    for needle in (
        "run.started",
        "refused",
        "approval",
        "execution.started",
        "execution.finished",
        "exit status 0",
        "output sha256 ",
        "step.crash",
        "step.probe_in_place",
        "recovery.ask_people",
        "step.retry",
        "mark_done.vote",
        "mark_done.repeated",
        "run.completed",
    ):
        assert needle in md, needle
    assert "time waited on people" in md and "## Timeline" in md
    for secret in ("simulated-password-not-secret", "sandbox-signing-secret", "xoxb-sandbox-token"):
        assert secret not in md

    db = str(h.replicas[0].env["FAILOVER_DB_URL"]).removeprefix("sqlite:///")
    assert os.path.exists(db)
    with sqlite3.connect(db) as conn:
        seq = conn.execute(
            "SELECT seq FROM audit_events WHERE run_id = ? AND event = 'approval' ORDER BY seq LIMIT 1", (run_id,)
        ).fetchone()[0]
        conn.execute("UPDATE audit_events SET actor = 'U0MALLORY' WHERE run_id = ? AND seq = ?", (run_id, seq))
    broken = _report(h, run_id)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and f"event #{seq} (approval) was altered" in broken.stdout
