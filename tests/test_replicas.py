"""Two `failover-bot serve` processes on one PostgreSQL database: each operation is performed once.

Clicks reach both replicas at once (as a replayed delivery would), two approvers click the same step
on different replicas at the same moment, one replica is restarted while the other is executing a
step, and the rest of the run alternates between them. The simulated platform's ``operations.jsonl``
shows every host operation exactly once and the thread shows every step once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.runs.machine import StepState
from bot.slack_ids import ActionId
from bot.store import audit
from sandbox.people import SlackPerson
from sandbox.rehearsal import SIGNING_SECRET
from tests.conftest import pg_url
from tests.support.serve_process import Served, postgres_schema, served

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
FAILOVER_CHANGES = [
    ("as-b", "service.stop"),
    ("as-b", "file.replace"),
    ("as-b", "service.start"),
    ("as-b", "taskqueue.drop"),
    ("as-b", "taskqueue.drop"),
]


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[Served]:
    url = pg_url() or ""
    try:
        schema = postgres_schema(url)
        db_url = schema.__enter__()
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at FAILOVER_TEST_PG_URL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        with served(tmp_path, replicas=2, db_url=db_url) as h:
            yield h
    finally:
        schema.__exit__(None, None, None)


def at_once_on_two_replicas(h: Served, run_id: str, step_id: str, action: ActionId, users: tuple[str, str]) -> None:
    """Two clicks (two deliveries) at the same moment, the first on replica 1, the second on replica 2.

    The same user twice is a double click that a load balancer spread over both replicas: both
    handle it, and the second counts once or is refused.
    """
    message = h.message_of(run_id, step_id)
    clickers = [
        SlackPerson(user, user.lower(), bot_url=replica.url, signing_secret=SIGNING_SECRET, slack=h.slack)
        for user, replica in zip(users, h.replicas, strict=True)
    ]
    go = threading.Barrier(len(clickers))
    answers: list[int] = []

    def click(person: SlackPerson) -> None:
        go.wait(timeout=10)
        answers.append(person.click(message, str(action)).status)

    threads = [threading.Thread(target=click, args=(p,)) for p in clickers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert answers == [200, 200]


def test_two_replicas_perform_each_operation_once(two_replicas: Served) -> None:
    h = two_replicas
    first, second = h.replicas
    for host in ("as-a", "ss-a1", "ss-a2"):
        h.faults(host, refuse=True)  # site-a is down

    # The command reaches both replicas: one run, one thread.
    h.route = "both"
    fo = h.start(ALICE, "start site-a")
    assert h.settled(fo).current.step.id == "F1"

    # The same step approved on both replicas at the same moment (a double click, then two approvers):
    # both replicas try to run it; one does.
    for step_id, users in (("F1", (BOB, BOB)), ("F2", (BOB, CAROL))):
        at_once_on_two_replicas(h, fo, step_id, ActionId.APPROVE, users)
        h.wait_until(f"{step_id} done", lambda s=step_id: h.service.view(fo).step(s).state == StepState.SUCCEEDED)
    assert h.changing_operations() == FAILOVER_CHANGES[:2]
    f1 = [e for e in h.events(fo) if e["step_id"] == "F1" and e["actor"] == BOB]
    assert [e["event"] for e in f1 if e["event"] == "approval"] == ["approval"]
    assert {"refused", "approval.repeated"} & {e["event"] for e in f1}  # the second click was handled too

    # Replica 1 restarts while replica 2 is in the middle of F3: its start-up recovery must leave
    # a step that a live replica is running alone (no "unknown", no second run).
    h.settled(fo)
    first.kill()
    h.faults("as-b", latency_ms=1500)
    h.route = "second"
    h.click(BOB, fo, "F3", ActionId.APPROVE)
    h.wait_event(fo, "execution.started", "F3")
    # F3's start request is still on its way (1.5 s latency): hold the service in StartPending until replica 1
    # is back, however long its start takes on a busy machine (the operation waits up to 60 s).
    h.faults("as-b", latency_ms=1500, stuck={"Attix5ProAccountServer": "StartPending"})
    first.start()  # recovery has run when /healthz answers
    assert h.service.view(fo).step("F3").state == StepState.RUNNING, "F3 finished before replica 1 recovered"
    h.faults("as-b")
    h.wait_until("F3 done", lambda: h.service.view(fo).step("F3").state == StepState.SUCCEEDED, timeout=60)
    assert not h.has_event(fo, "step.crash")

    # Both replicas die right after F4 is approved (before it runs) and start again at the same
    # moment: both find F4 approved and both try to run it; one does.
    h.settled(fo)
    h.faults("as-b", latency_ms=800)
    h.route = "both"
    h.click(CAROL, fo, "F4", ActionId.APPROVE)
    h.wait_event(fo, "step.approve", "F4")
    first.kill()
    second.kill()
    h.faults("as-b")
    assert not h.has_event(fo, "execution.started", "F4"), "the kill came too late: F4 had started"
    restarts = [threading.Thread(target=r.start) for r in (first, second)]
    for t in restarts:
        t.start()
    for t in restarts:
        t.join(timeout=90)
    assert first.alive and second.alive
    h.wait_until("F4 done", lambda: h.service.view(fo).step("F4").state == StepState.SUCCEEDED)

    # Then every click to both replicas at once, then alternating between them.
    view = h.settled(fo)
    h.act_once(fo, view.current, (BOB, CAROL))  # F5
    h.route = "alternate"
    view = h.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
    assert view.run.state == "completed"

    # Each operation once, each step executed once, each message posted once.
    assert h.changing_operations() == FAILOVER_CHANGES
    events = h.events(fo)
    for step_id in ("F0", "F1", "F2", "F3", "F4", "F7"):
        started = [e for e in events if e["event"] == "execution.started" and e["step_id"] == step_id]
        assert len(started) == 1, step_id
    assert not [e for e in events if e["event"] in ("step.crash", "recovery.ask_people")]
    h.wait_until(
        "the status card to say completed", lambda: "completed" in json.dumps(h.thread(fo)[0].blocks), timeout=10
    )
    roots = [m for m in h.slack.channel_messages("C0INCIDENT") if "FO-1" in m.text and not m.is_reply]
    assert len(roots) == 1
    thread = h.thread(fo)
    for step_id in ("F0", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8"):
        assert sum(1 for m in thread if m.text.startswith(f"{step_id} ")) == 1, step_id
    with h.service.store.session() as s:
        assert audit.check_run(s, fo).intact
    assert first.alive and second.alive
    time.sleep(0.2)  # nothing more happens afterwards
    assert h.changing_operations() == FAILOVER_CHANGES
