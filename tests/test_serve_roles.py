"""`serve` as two processes: the web process acknowledges and records, a supervised worker process executes.

Role all (the default) starts the worker and restarts it when it dies; the worker dies with its parent,
even on SIGKILL. Roles web and worker deployed apart meet in the database: the worker tails the audit
log's sequence. A frozen worker proves where each half of the work happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.hub import KICK, AuditTail, ChangeHub, Inbox, decode_change, encode_change
from bot.runs.machine import StepState
from bot.runtime import ForwardingWorker
from bot.slack_ids import ActionId
from bot.store import audit
from bot.store.db import Store
from tests.support.serve_process import ROOT, Served, ServeProcess, served

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
FAILOVER_CHANGES = [
    ("as-b", "service.stop"),  # F1
    ("as-b", "file.replace"),  # F2
    ("as-b", "service.start"),  # F3
    ("as-b", "taskqueue.drop"),  # F4
    ("as-b", "taskqueue.drop"),  # F7
]


# ---------------------------------------------------------------------- processes, as /proc shows them


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_of(bot: ServeProcess, *, other_than: int | None = None, timeout: float = 60.0) -> int:
    """The pid of the one worker process that ``bot`` supervises (a new one when ``other_than`` is given)."""
    assert bot.proc is not None
    deadline = time.monotonic() + timeout
    while True:
        workers = [c for c in children(bot.proc.pid) if "worker" in cmdline(c) and running(c)]
        if len(workers) == 1 and workers[0] != other_than:
            return workers[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"serve {bot.proc.pid} has workers {workers}, wanted one:\n{bot.log_tail()}")
        time.sleep(0.05)


def site_a_down(h: Served) -> None:
    for host in ("as-a", "ss-a1", "ss-a2"):
        h.faults(host, refuse=True)


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads processes from /proc")


# ---------------------------------------------------------------------- role all: two processes


@needs_proc
def test_the_web_process_acknowledges_and_records_while_the_worker_process_executes(tmp_path: Path) -> None:
    with served(tmp_path) as h:
        bot = h.replicas[0]
        worker = worker_of(bot)
        site_a_down(h)
        fo = h.start(ALICE, "start site-a")
        assert h.settled(fo).current.step.id == "F1"  # F0's checks ran in the worker process

        # Frozen worker: the click is still answered and recorded, but nothing runs on a host.
        os.kill(worker, signal.SIGSTOP)
        try:
            h.click(BOB, fo, "F1", ActionId.APPROVE)
            h.wait_event(fo, "step.approve", "F1", timeout=10)
            time.sleep(1.0)
            assert not h.has_event(fo, "execution.started", "F1")
            assert h.changing_operations() == []
        finally:
            os.kill(worker, signal.SIGCONT)
        h.wait_event(fo, "step.succeed", "F1", timeout=30)  # the change reached the worker once it ran again

        # Running: a click the web process acknowledged reaches the worker within a bound (not a speed target).
        h.settled(fo)
        h.click(BOB, fo, "F2", ActionId.APPROVE)
        acknowledged = time.monotonic()
        h.wait_event(fo, "execution.started", "F2", timeout=10)
        assert time.monotonic() - acknowledged < 10

        view = h.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
        assert view.run.state == "completed"
        assert h.changing_operations() == FAILOVER_CHANGES
        assert worker_of(bot) == worker  # one worker all along: two processes, not one per click
        assert len(children(bot.proc.pid)) == 1  # type: ignore[union-attr]


@needs_proc
def test_a_killed_worker_is_restarted_and_the_run_finishes_with_every_operation_once(tmp_path: Path) -> None:
    with served(tmp_path) as h:
        bot = h.replicas[0]
        worker = worker_of(bot)
        site_a_down(h)
        fo = h.start(ALICE, "start site-a")
        h.act_once(fo, h.settled(fo).current, (BOB, CAROL))  # F1
        h.act_once(fo, h.settled(fo).current, (BOB, CAROL))  # F2
        assert h.settled(fo).current.step.id == "F3"

        # SIGKILL the worker while as-b performs F3's service start, before the worker heard back.
        h.faults("as-b", latency_ms=600)
        h.click(BOB, fo, "F3", ActionId.APPROVE)
        h.wait_until("as-b started its service", lambda: ("as-b", "service.start") in h.changing_operations())
        os.kill(worker, signal.SIGKILL)
        h.faults("as-b")
        assert bot.alive  # the web process lives on
        restarted = worker_of(bot, other_than=worker)
        h.wait_until(
            "the restarted worker's probe or its question to people",
            lambda: h.has_event(fo, "step.probe_in_place", "F3") or h.has_event(fo, "recovery.ask_people", "F3"),
        )
        view = h.settled(fo)
        assert h.has_event(fo, "step.crash", "F3")
        if view.step("F3").state == StepState.UNKNOWN:  # probed while the request was still in flight: people decide
            reason = "as-b's AccountServer service shows Running"
            h.click(BOB, fo, "F3", ActionId.MARK_DONE, reason=reason)
            h.click(CAROL, fo, "F3", ActionId.MARK_DONE, reason=reason)
            h.wait_until("F3 marked done", lambda: h.service.view(fo).step("F3").state == StepState.MARKED_DONE)
        else:  # its probe found the service running: done, not run again
            assert view.step("F3").state == StepState.SUCCEEDED and view.current.step.id == "F4"

        view = h.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
        assert view.run.state == "completed"
        assert h.changing_operations() == FAILOVER_CHANGES  # exactly once each
        assert worker_of(bot) == restarted
        assert "starting another" in bot.log_tail(400)


@needs_proc
def test_sigkill_of_serve_leaves_no_worker_process(tmp_path: Path) -> None:
    with served(tmp_path) as h:
        bot = h.replicas[0]
        worker = worker_of(bot)
        bot.kill()
        deadline = time.monotonic() + 10
        while running(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived its serve process"
            time.sleep(0.05)
        bot.start()  # and a new serve gets a new worker
        assert worker_of(bot) != worker


# ---------------------------------------------------------------------- roles deployed apart


@needs_proc
def test_web_and_worker_deployed_apart_meet_in_the_database(tmp_path: Path) -> None:
    with served(tmp_path, serve_args=("--role", "web")) as h:
        bot = h.replicas[0]
        assert bot.proc is not None and children(bot.proc.pid) == []  # role web starts no worker
        log = (tmp_path / "logs" / "worker.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--role", "worker", "--config", str(bot.config_path)],
            cwd=ROOT,
            env=bot.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            site_a_down(h)
            fo = h.start(ALICE, "start site-a")  # the worker hears of it from the audit log
            view = h.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
            assert view.run.state == "completed"
            assert h.changing_operations() == FAILOVER_CHANGES
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            log.close()
        assert worker.returncode == 0  # SIGTERM: it finished what it held and stopped


# ---------------------------------------------------------------------- the parts, alone


def test_a_change_crosses_the_pipe_as_one_line_and_back() -> None:
    assert decode_change(encode_change("FO-7", "approve")) == ("FO-7", "approve")
    assert decode_change(encode_change("FO-7", "")) == ("FO-7", "")
    assert decode_change(encode_change("FO-7", "a\tb\nc")) == ("FO-7", "a b c")
    assert encode_change("FO-7", "x\ny").count(b"\n") == 1
    assert decode_change(b"garbage\n") is None


def test_the_inbox_coalesces_a_burst_per_run() -> None:
    import threading

    delivered: list[tuple[str, set[str]]] = []
    gate = threading.Event()

    def deliver(run_id: str, whats: set[str]) -> None:
        gate.wait(5)
        delivered.append((run_id, whats))

    inbox = Inbox(deliver)
    inbox.put("FO-1", "")  # taken at once; its delivery waits on the gate
    time.sleep(0.1)
    for _ in range(50):
        inbox.put("FO-1", KICK)
        inbox.put("FO-1", "")
    gate.set()
    deadline = time.monotonic() + 5
    while len(delivered) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    inbox.close()
    assert delivered == [("FO-1", {""}), ("FO-1", {"", KICK})]  # fifty clicks, two deliveries


def test_the_audit_tail_wakes_a_run_for_each_new_event_and_not_for_old_ones(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'tail.db'}")
    try:
        audit.record(store, "FO-1", "U0ALICE", "run.open")
        woken: list[str] = []
        inbox = Inbox(lambda run_id, whats: woken.append(run_id))
        tail = AuditTail(store, inbox)
        assert tail.poll() == 0  # what was there before the tail started is not news
        audit.record(store, "FO-2", "U0ALICE", "run.open")
        audit.record(store, "FO-2", "U0BOB", "step.approve", step_id="F1")
        assert tail.poll() == 2
        assert tail.poll() == 0
        deadline = time.monotonic() + 5
        while "FO-2" not in woken and time.monotonic() < deadline:
            time.sleep(0.01)
        inbox.close()
        assert woken == ["FO-2"]
    finally:
        store.dispose()


def test_the_web_processs_worker_never_executes_it_publishes_a_kick() -> None:
    heard: list[tuple[str, str]] = []
    hub = ChangeHub()
    hub.subscribe(lambda run_id, what: heard.append((run_id, what)))
    worker = ForwardingWorker(service=None, executor=None, hub=hub)  # type: ignore[arg-type]
    assert worker.kick("FO-3") is None
    assert heard == [("FO-3", KICK)]
    with pytest.raises(RuntimeError):
        worker.recover()
