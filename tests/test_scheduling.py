"""Reminders, escalations and nudges on a controllable clock; jobs kept in the database; one leader among replicas."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from slack_sdk import WebClient

from bot.config import Config, load_config
from bot.presenter import Presenter
from bot.runs.machine import StepState
from bot.runs.service import RunService
from bot.runtime import build_runtime
from bot.scheduling import Reminders, remind_approvers
from bot.server import start_up
from bot.store import audit
from bot.store.db import Store, utcnow
from bot.store.locks import LEASE_NAMESPACE, PostgresLease
from sandbox.slack_api import DEFAULT_TOKEN, FakeSlackApi, Message
from tests.support.engine import ALICE, BOB, CAROL, seen
from tests.support.platform import write_config

CHANNEL = "C0INCIDENT"
OPS_GROUP = "S0OPS"
PEOPLE = f"<@{ALICE}> <@{BOB}> <@{CAROL}>"
APPROVERS = f"{PEOPLE} <!subteam^{OPS_GROUP}>"  # the groups are mentioned at escalation only
T = TypeVar("T")


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now


@dataclass
class Bot:
    """The parts of one bot process that reminders involve, wired as build_runtime wires them."""

    config: Config
    store: Store
    service: RunService
    presenter: Presenter
    reminders: Reminders
    slack: FakeSlackApi
    clock: Clock

    def notify(self, run_id: str) -> None:
        """What the worker calls after every change of a run."""
        self.presenter.sync(run_id)
        self.reminders.refresh(run_id)

    def post(self, run_id: str, step_id: str) -> None:
        self.service.post(run_id, step_id, fingerprint=f"fp-{step_id}", preview="")
        self.notify(run_id)

    def thread(self, run_id: str) -> list[Message]:
        thread_ts = self.service.get_run(run_id).thread_ts
        assert thread_ts is not None
        return self.slack.thread(CHANNEL, thread_ts)

    def nags(self, run_id: str) -> list[Message]:
        """The reminders, escalations and nudges in the thread (not the status card or step cards)."""
        return [m for m in self.thread(run_id) if m.text.startswith(("⏰", "📣", "⏳"))]

    def jobs(self) -> dict[str, datetime]:
        return {job.id: job.next_run_time for job in self.reminders.scheduler.get_jobs()}

    def audit_events(self, run_id: str, event: str) -> list[Any]:
        with self.store.session() as s:
            return [e for e in audit.events_of(s, run_id) if e.event == event]


def make_config(tmp_path: Path, **slack: Any) -> Config:
    settings = {"approver_groups": [OPS_GROUP], "remind_after_minutes": 10, "escalate_after_reminders": 2}
    settings.update(slack)
    return load_config(write_config(tmp_path / "cfg", slack=settings))


def make_bot(store: Store, slack: FakeSlackApi, config: Config, clock: Clock, **kwargs: Any) -> Bot:
    service = RunService(store, config, clock=clock)
    client = WebClient(token=DEFAULT_TOKEN, base_url=slack.api_url)
    presenter = Presenter(service, client, post_interval_s=0, clock=clock)
    kwargs.setdefault("autorun", False)  # time moves by tick(), never by the wall clock
    reminders = Reminders(service, presenter, clock=clock, **kwargs)
    return Bot(config, store, service, presenter, reminders, slack, clock)


@pytest.fixture
def slack() -> Iterator[FakeSlackApi]:
    with FakeSlackApi(usergroups={OPS_GROUP: [ALICE]}) as fake:
        yield fake


@pytest.fixture
def bot(store: Store, slack: FakeSlackApi, tmp_path: Path) -> Iterator[Bot]:
    b = make_bot(store, slack, make_config(tmp_path), Clock())
    b.reminders.start()
    try:
        yield b
    finally:
        b.reminders.close()


def wait_until(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def open_rebuilt_failback(b: Bot) -> str:
    """A storage failover waiting at F5 (manual: log in to the Console), then F6 (manual); F0 is left out."""
    run = b.service.open_run("failover", "site-a", ["scope=storage"], ALICE, CHANNEL)
    b.service.not_needed(run.id, "F0", "preflight is not what these tests are about")
    b.post(run.id, "F5")
    return run.id


# ---------------------------------------------------------------------------- reminders


def test_reminder_is_due_after_the_step_waited_and_mentions_who_can_act(bot: Bot) -> None:
    posted = bot.clock.now
    run_id = open_rebuilt_failback(bot)
    assert bot.jobs() == {f"remind:{run_id}:F5:0": posted + timedelta(minutes=10)}

    assert bot.reminders.tick(bot.clock.advance(9)) == []
    assert bot.nags(run_id) == []

    assert bot.reminders.tick(bot.clock.advance(1)) == ["reminder"]
    [reminder] = bot.nags(run_id)
    assert reminder.is_reply and not reminder.reply_broadcast  # in the incident thread, not the channel
    assert "Reminder 1" in reminder.text and "*F5*" in reminder.text
    assert "waited 10 min 0 s for a person to do this and press Done" in reminder.text
    assert PEOPLE in reminder.text and "subteam" not in reminder.text  # people, not their groups (issue 14 item 2)
    assert len(bot.slack.channel_messages(CHANNEL)) == 1  # only the status card shows in the channel
    # it repeats every remind_after_minutes
    assert bot.jobs() == {f"remind:{run_id}:F5:0": posted + timedelta(minutes=20)}


def test_escalates_to_the_channel_once_after_the_configured_reminders(bot: Bot) -> None:
    run_id = open_rebuilt_failback(bot)
    sent = [bot.reminders.tick(bot.clock.advance(10)) for _ in range(5)]
    assert sent == [["reminder"], ["reminder"], ["escalation"], ["reminder"], ["reminder"]]

    broadcasts = [m for m in bot.slack.channel_messages(CHANNEL) if m.is_reply]
    assert len(broadcasts) == 1
    [escalation] = broadcasts
    assert escalation.reply_broadcast and escalation.text.startswith("📣")
    assert f"{run_id} needs attention" in escalation.text and "waited 30 min 0 s" in escalation.text
    assert "2 reminders in the thread went unanswered" in escalation.text
    assert APPROVERS in escalation.text
    assert [m.text.split(":")[0] for m in bot.nags(run_id) if m.text.startswith("⏰")] == [
        "⏰ Reminder 1",
        "⏰ Reminder 2",
        "⏰ Reminder 3",
        "⏰ Reminder 4",
    ]
    # every reminder and the escalation are in the run's audit chain
    assert len(bot.audit_events(run_id, "reminder")) == 4
    assert len(bot.audit_events(run_id, "escalation")) == 1


def test_missed_reminders_coalesce_into_one(bot: Bot) -> None:
    run_id = open_rebuilt_failback(bot)
    assert bot.reminders.tick(bot.clock.advance(35)) == ["reminder"]  # 10, 20 and 30 were missed: one reminder
    assert len(bot.nags(run_id)) == 1
    assert bot.jobs()[f"remind:{run_id}:F5:0"] == bot.clock.now + timedelta(minutes=5)


def test_wait_steps_get_nudges_and_never_escalate(bot: Bot) -> None:
    run = bot.service.open_run("failback", "site-a", ["rebuilt", "scope=storage"], ALICE, CHANNEL)
    bot.post(run.id, "R0")
    run_id = run.id
    assert list(bot.jobs()) == [f"remind:{run_id}:R0:0"]  # a deletion waits on approvers: reminders
    for person in (BOB, CAROL):  # skipping a delete takes what approving it takes: two people
        bot.service.skip(
            run_id, "R0", person, "none of the old registrations is listed", **seen(bot.service, run_id, "R0")
        )
    posted = bot.clock.advance(3)
    bot.post(run_id, "R2")  # install StorageServers and add them as mirrors: hours, so a wait (issue 9 item 14)
    assert bot.jobs() == {f"nudge:{run_id}:R2:0": posted + timedelta(minutes=30)}  # R0's reminder is gone
    bot.service.done(run_id, "R2", BOB, **seen(bot.service, run_id, "R2"))
    posted = bot.clock.advance(3)
    bot.post(run_id, "R3")
    assert bot.jobs() == {f"nudge:{run_id}:R3:0": posted + timedelta(minutes=30)}

    assert bot.reminders.tick(bot.clock.advance(29)) == []
    sent = [bot.reminders.tick(bot.clock.advance(1 if i == 0 else 30)) for i in range(5)]
    assert sent == [["nudge"]] * 5
    nudges = bot.nags(run_id)
    assert len(nudges) == 5
    assert "still waiting for mirroring to the new StorageServers to complete? Press *Done*" in nudges[0].text
    assert "Waiting 30 min 0 s so far" in nudges[0].text
    assert "<@" not in nudges[0].text  # waiting is expected: nobody is paged
    assert not any(m.reply_broadcast for m in nudges)

    bot.service.done(run_id, "R3", CAROL, **seen(bot.service, run_id, "R3"))
    bot.post(run_id, "B25")
    assert list(bot.jobs()) == [f"remind:{run_id}:B25:0"]


def test_a_reminder_for_a_step_that_moved_on_does_nothing(bot: Bot) -> None:
    run_id = open_rebuilt_failback(bot)
    # F5 is done, but its job fires before this replica hears of it (or on another replica)
    bot.service.done(run_id, "F5", BOB, **seen(bot.service, run_id, "F5"))
    assert bot.reminders.tick(bot.clock.advance(10)) == []
    assert bot.nags(run_id) == []
    assert bot.jobs() == {}  # the stale job removed itself
    # a job of an older attempt of the current step does nothing either
    bot.post(run_id, "F6")
    assert remind_approvers(run_id, "F6", 7) is None
    assert remind_approvers(run_id, "F5", 0) is None
    assert bot.nags(run_id) == []


def test_destructive_step_reminds_only_approvers_who_still_can_approve(
    store: Store, slack: FakeSlackApi, tmp_path: Path
) -> None:
    b = make_bot(store, slack, make_config(tmp_path, approver_groups=[]), Clock())
    b.reminders.start()
    try:
        run = b.service.open_run("failback", "site-a", ["scope=storage"], ALICE, CHANNEL)
        for step in ("B7", "B8"):  # host steps: approve, the bot runs them
            b.post(run.id, step)
            if b.service.view(run.id).step(step).state == StepState.AWAITING_APPROVAL:
                b.service.approve(run.id, step, BOB, **seen(b.service, run.id, step))
            assert b.service.claim(run.id, step)
            b.service.finish(run.id, step, ok=True)
        for step in ("B9", "B10"):
            b.post(run.id, step)
            b.service.done(run.id, step, BOB, **seen(b.service, run.id, step))
        b.post(run.id, "B11")  # destructive: two approvers, not the initiator (ALICE)
        b.service.approve(run.id, "B11", BOB, **seen(b.service, run.id, "B11"))
        assert b.reminders.tick(b.clock.advance(10)) == ["reminder"]
        [reminder] = b.nags(run.id)
        assert "two different approvers (1 of 2)" in reminder.text
        assert f"<@{CAROL}>" in reminder.text
        assert f"<@{ALICE}>" not in reminder.text and f"<@{BOB}>" not in reminder.text
    finally:
        b.reminders.close()


# ---------------------------------------------------------------------------- jobs follow the run


def test_jobs_follow_the_current_step_and_go_when_the_run_completes(bot: Bot) -> None:
    run = bot.service.open_run("failover", "site-a", ["scope=storage"], ALICE, CHANNEL)
    bot.post(run.id, "F0")  # the bot's preflight: waits on nobody
    assert bot.jobs() == {}
    assert bot.service.claim(run.id, "F0")
    bot.service.finish(run.id, "F0", ok=True)
    bot.notify(run.id)
    bot.post(run.id, "F5")
    assert list(bot.jobs()) == [f"remind:{run.id}:F5:0"]
    bot.service.done(run.id, "F5", BOB, **seen(bot.service, run.id, "F5"))
    bot.post(run.id, "F6")
    assert list(bot.jobs()) == [f"remind:{run.id}:F6:0"]
    bot.service.done(run.id, "F6", BOB, **seen(bot.service, run.id, "F6"))
    bot.post(run.id, "F7")
    assert list(bot.jobs()) == [f"remind:{run.id}:F7:0"]
    bot.service.approve(run.id, "F7", BOB, **seen(bot.service, run.id, "F7"))
    bot.notify(run.id)
    assert bot.jobs() == {}  # approved: the bot runs it, nobody to remind
    assert bot.service.claim(run.id, "F7")
    failed_at = bot.clock.advance(2)
    bot.service.finish(run.id, "F7", ok=False, error="as-b refused the connection")
    bot.notify(run.id)
    assert bot.jobs() == {f"remind:{run.id}:F7:0": failed_at + timedelta(minutes=10)}
    bot.reminders.tick(bot.clock.advance(10))
    assert "for an approver: Retry, Mark done or Abort" in bot.nags(run.id)[-1].text

    bot.service.retry(run.id, "F7", BOB, **seen(bot.service, run.id, "F7"))
    assert bot.service.claim(run.id, "F7")
    bot.service.finish(run.id, "F7", ok=True)
    assert bot.service.complete_if_done(run.id)
    bot.notify(run.id)
    assert bot.jobs() == {}
    assert bot.reminders.tick(bot.clock.advance(600)) == []


def test_jobs_of_an_aborted_run_are_removed_and_nothing_is_sent(bot: Bot) -> None:
    run_id = open_rebuilt_failback(bot)
    bot.service.abort(run_id, ALICE, "site-a came back by itself")
    bot.presenter.sync(run_id)  # what /failover abort does
    bot.reminders.sweep()  # the leader sweeps every few seconds
    assert bot.jobs() == {}
    assert bot.reminders.tick(bot.clock.advance(60)) == []
    assert bot.nags(run_id) == []


def test_a_job_of_an_aborted_run_that_fires_before_the_sweep_sends_nothing(bot: Bot) -> None:
    run_id = open_rebuilt_failback(bot)
    bot.service.abort(run_id, ALICE, "wrong site")
    assert bot.reminders.tick(bot.clock.advance(10)) == []
    assert bot.nags(run_id) == []
    assert bot.jobs() == {}


# ---------------------------------------------------------------------------- restarts and replicas


def test_jobs_and_reminder_counts_survive_a_restart(store: Store, slack: FakeSlackApi, tmp_path: Path) -> None:
    config, clock = make_config(tmp_path), Clock()
    first = make_bot(store, slack, config, clock)
    first.reminders.start()
    posted = clock.now
    run_id = open_rebuilt_failback(first)
    assert first.reminders.tick(clock.advance(10)) == ["reminder"]
    first.reminders.close()  # the process stops

    store2 = Store(store.url)
    second = make_bot(store2, slack, config, clock)
    second.reminders.start()
    try:
        assert second.reminders.is_leader
        assert second.jobs() == {f"remind:{run_id}:F5:0": posted + timedelta(minutes=20)}
        assert second.reminders.tick(clock.advance(10)) == ["reminder"]
        assert "Reminder 2" in second.nags(run_id)[-1].text  # the count went on from the audit log
        assert second.reminders.tick(clock.advance(10)) == ["escalation"]
    finally:
        second.reminders.close()
        store2.dispose()


def test_one_leader_among_replicas_and_another_takes_over(store: Store, slack: FakeSlackApi, tmp_path: Path) -> None:
    config, clock = make_config(tmp_path), Clock()
    store2 = Store(store.url)
    a = make_bot(store, slack, config, clock, lease_interval_s=0.1)
    b = make_bot(store2, slack, config, clock, lease_interval_s=0.1)
    a.reminders.start()
    b.reminders.start()
    try:
        assert a.reminders.is_leader and not b.reminders.is_leader
        time.sleep(0.3)  # b keeps trying, and keeps failing while a lives
        assert a.reminders.is_leader and not b.reminders.is_leader

        # a step posted through the replica that does not lead is scheduled by the leader, from run state
        run_id = open_rebuilt_failback(b)
        wait_until(lambda: f"remind:{run_id}:F5:0" in a.jobs(), timeout=5, what="the leader's sweep")
        assert b.reminders.tick(clock.advance(10)) == []  # b does not send
        assert a.reminders.tick() == ["reminder"]

        a.reminders.close()  # the leader goes away
        wait_until(lambda: b.reminders.is_leader, timeout=10, what="the other replica to take over")
        assert b.reminders.tick(clock.advance(10)) == ["reminder"]
        assert [m.text.split(":")[0] for m in b.nags(run_id)] == ["⏰ Reminder 1", "⏰ Reminder 2"]
    finally:
        a.reminders.close()
        b.reminders.close()
        store2.dispose()


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_postgres_leader_whose_connection_dies_is_replaced(store: Store, slack: FakeSlackApi, tmp_path: Path) -> None:
    config, clock = make_config(tmp_path), Clock()
    store2 = Store(store.url)
    a = make_bot(store, slack, config, clock, lease_interval_s=0.1)
    b = make_bot(store2, slack, config, clock, lease_interval_s=0.1)
    a.reminders.start()
    b.reminders.start()
    try:
        assert a.reminders.is_leader and not b.reminders.is_leader
        assert isinstance(a.reminders.lease, PostgresLease)
        old_pid = a.reminders.lease.backend_pid
        with store.engine.begin() as conn:  # the leader's host dies: PostgreSQL ends its session
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": old_pid}).scalar()

        def new_leader() -> bool:
            leaders = [r for r in (a.reminders, b.reminders) if r.is_leader]
            return len(leaders) == 1 and (b.reminders.is_leader or a.reminders.lease.backend_pid != old_pid)

        wait_until(new_leader, timeout=10, what="a leader holding the lock again")
        time.sleep(0.5)
        assert [a.reminders.is_leader, b.reminders.is_leader].count(True) == 1
        with store.engine.connect() as conn:
            holders = conn.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :ns AND granted"),
                {"ns": LEASE_NAMESPACE},
            ).scalar()
        assert holders == 1
    finally:
        a.reminders.close()
        b.reminders.close()
        store2.dispose()


# ---------------------------------------------------------------------------- wired into the bot


def test_the_running_bot_reminds_by_itself(store: Store, slack: FakeSlackApi, tmp_path: Path) -> None:
    config = make_config(tmp_path, remind_after_minutes=0.02)  # 1.2 s of real time
    runtime = build_runtime(
        config, store=store, token=DEFAULT_TOKEN, signing_secret="s", api_url=slack.api_url, post_interval_s=0
    )
    try:
        start_up(runtime)
        assert runtime.reminders.is_leader
        service = runtime.engine.service
        run = service.open_run("failover", "site-a", ["scope=storage"], ALICE, CHANNEL)
        service.not_needed(run.id, "F0", "preflight is not what this test is about")
        service.post(run.id, "F5", fingerprint="fp", preview="")
        runtime.engine.worker.notify(run.id, "step F5 posted")  # the worker's callback, as after every change

        def reminded() -> list[Message]:
            thread_ts = service.get_run(run.id).thread_ts
            return [m for m in slack.thread(CHANNEL, thread_ts or "") if m.text.startswith("⏰")]

        [first, *_] = wait_until(reminded, timeout=15, what="a reminder in the incident thread")
        assert "*F5*" in first.text and PEOPLE in first.text
        service.done(run.id, "F5", BOB, **seen(service, run.id, "F5"))
        runtime.engine.worker.notify(run.id, "step F5 done")
        assert [j.id for j in runtime.reminders.scheduler.get_jobs()] == []
    finally:
        runtime.close()
