"""Stateful property tests: random interleavings of every button by anyone, over the run service on a real database.

Hypothesis drives one run at a time through the real RunService and Worker on SQLite (and, smaller, on
PostgreSQL): every button by any person (approver or not, the initiator or not), on the current message or
an older one (stale round or fingerprint), Slack's retries (the same request again), host faults (execution
errors and unexpected exceptions), hosts changing under an approval, and restarts (a new service and worker
on the same database). Only the host actions are stand-ins: they count every host operation and note any
that runs without the approvals of its current fingerprint. After every step the invariants below hold.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from slack_sdk import WebClient

from actions.base import Outcome
from actions.guid import guid_fact
from actions.settings_xml import otp_from_guid
from bot.config import load_config
from bot.errors import RemoteOperationFailed, UserError
from bot.presenter import Presenter
from bot.runs import policy
from bot.runs.machine import StepState
from bot.runs.rules import bot_executes
from bot.runs.service import WHOLE, RunService
from bot.runs.worker import Worker
from bot.store import audit
from bot.store.db import Store, normalise_url
from bot.store.models import Approval, AuditEvent, Run
from sandbox.slack_api import DEFAULT_TOKEN, FakeSlackApi
from tests.conftest import pg_url
from tests.support.platform import write_config

ALICE, BOB, CAROL, DAVE, MALLORY = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", "U0MALLORY"
PEOPLE = [ALICE, BOB, CAROL, DAVE, MALLORY]
OPERATORS = [ALICE, BOB]
APPROVERS = [ALICE, BOB, CAROL, DAVE]  # MALLORY is in the channel, nothing more
PASSWORD = "pw-" + uuid.uuid4().hex  # the WinRM password: must never be posted
# Where a run starts: the step it is brought to by correct clicks before the random ones begin.
STARTS = [
    ("failover", ["scope=account"], "F1"),
    ("failover", ["scope=all"], "F4"),
    ("failback", ["scope=storage"], "B8"),
    ("failback", [], "B11"),
    ("failback", [], "B28"),
]


TRIED: Counter[str] = Counter()  # what the suite tried, by kind (printed at the end; docs/security.md cites it)


class Hosts:
    """The stand-in for the Windows hosts: operations counted, faults injected, previews that change."""

    def __init__(self) -> None:
        self.version: Counter[str] = Counter()  # a host whose version moves previews differently
        self.faults: dict[str, Exception] = {}  # host -> what its next operation raises
        self.executions: Counter[tuple[str, str, str]] = Counter()  # (run, step, target) -> operations
        self.violations: list[str] = []
        self.guids: dict[str, str] = {}
        self.machine: RunMachine | None = None


class FakeAction:
    """One action for every step kind: previews name the host's version; runs check they were approved."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts

    def preview(self, ctx: Any, step: Any, target: Any) -> str:
        return f"{step.id} on {target.label} (hosts' state v{self.hosts.version['*']})"

    def run(self, ctx: Any, step: Any, target: Any) -> Outcome:
        machine = self.hosts.machine
        assert machine is not None
        run_id = machine.run_id
        key = target.key if step.fanout else WHOLE
        self.hosts.executions[(run_id, step.id, key)] += 1
        self._check_approved(machine, run_id, step, key)
        host = target.host or "-"
        fault = self.hosts.faults.pop(host, None)
        if fault is not None:
            raise fault
        facts: dict[str, Any] = {}
        if target.host:
            guid = self.hosts.guids.setdefault(target.host, str(uuid.uuid4()))
            facts[guid_fact(target.host)] = guid
        return Outcome(f"{step.id} done on {target.label}", {"host": host}, facts)

    def probe(self, ctx: Any, step: Any, target: Any) -> bool | None:
        return None  # a read cannot tell: people decide

    def _check_approved(self, machine: RunMachine, run_id: str, step: Any, key: str) -> None:
        """Nothing executes without the approvals of the fingerprint it is about to execute."""
        sv = machine.service.view(run_id).step(step.id)
        row = sv.targets[key] if key else sv.row
        if row.state != StepState.RUNNING:
            self.hosts.violations.append(f"{step.id} {key} executed while {row.state}")
        preview = machine.worker.preview(machine.service.view(run_id), step)
        current = policy.fingerprint(step.id, [t.key for t in step.targets], step.spec.params, preview)
        if sv.row.fingerprint != current:
            self.hosts.violations.append(f"{step.id} executed with fingerprint {sv.row.fingerprint} != {current}")
        if sv.needed == 0:
            return
        votes = machine.votes(run_id, step.id, "approve", sv.row.attempt)
        good = {v.user_id for v in votes if v.fingerprint == sv.row.fingerprint and machine.eligible(v.user_id, step)}
        if len(good) < sv.needed:
            self.hosts.violations.append(f"{step.id} executed with {len(good)} of {sv.needed} approvals")


class RunMachine(RuleBasedStateMachine):
    """One bot (service + worker) over a real database; restarts replace both, the database stays."""

    url: str = ""  # set per test (SQLite file or PostgreSQL schema)
    config_path: Path | None = None
    slack: FakeSlackApi | None = None

    def __init__(self) -> None:
        super().__init__()
        assert self.config_path is not None and self.slack is not None
        self.hosts = Hosts()
        self.hosts.machine = self
        self.config = load_config(self.config_path)
        self.store = Store(self.url)
        self._patch = mock.patch("bot.runs.worker.action_for", lambda name: FakeAction(self.hosts))
        self._patch.start()
        self.client = WebClient(token=DEFAULT_TOKEN, base_url=self.slack.api_url)
        self._start_bot()
        self.run_id = ""
        self.cards: list[dict[str, Any]] = []  # every (step, round, fingerprint) a person has seen
        self.last_click: tuple[str, str, dict[str, Any]] | None = None

    def _start_bot(self) -> None:
        self.service = RunService(self.store, self.config)
        self.worker = Worker(self.service, executor=None, notify=lambda run_id, what: None)
        self.presenter = Presenter(self.service, self.client, post_interval_s=0)

    def teardown(self) -> None:
        self.worker.close()
        self._patch.stop()
        self.store.dispose()

    # ------------------------------------------------------------------ helpers

    def votes(self, run_id: str, step_id: str, kind: str, rnd: int) -> list[Approval]:
        with self.store.read_session() as s:
            return list(
                s.scalars(
                    sa.select(Approval).where(
                        Approval.run_id == run_id,
                        Approval.step_id == step_id,
                        Approval.kind == kind,
                        Approval.round == rnd,
                    )
                )
            )

    def eligible(self, user: str, step: Any) -> bool:
        if user not in APPROVERS:
            return False
        return not (step.risk == "destructive" and user == self.initiator)

    @property
    def initiator(self) -> str:
        return self.service.get_run(self.run_id).initiator

    def settle(self) -> None:
        """What the bot does after every request: advance the run, then bring the thread up to date."""
        self.worker.advance(self.run_id)
        self.presenter.sync(self.run_id)
        view = self.service.view(self.run_id)
        cur = view.current
        if cur is not None:
            card = {"step": cur.step.id, "round": cur.row.attempt, "fingerprint": cur.row.fingerprint or ""}
            if card not in self.cards:
                self.cards.append(card)

    def drive_to(self, step_id: str) -> None:
        """Correct clicks by two approvers who did not start the run, until ``step_id`` is current."""
        for _ in range(200):
            self.settle()
            view = self.service.view(self.run_id)
            cur = view.current
            if cur is None or cur.step.id == step_id or view.run.state != "active":
                return
            seen = {"round": cur.row.attempt, "fingerprint": cur.row.fingerprint or ""}
            choice = cur.step.spec.choices[0] if cur.step.spec.choices else None
            if cur.state == StepState.AWAITING_APPROVAL:
                if cur.step.risk == "destructive":
                    self.service.approve(self.run_id, cur.step.id, CAROL, **seen)
                    self.service.approve(self.run_id, cur.step.id, DAVE, **seen)
                elif bot_executes(cur.step):
                    self.service.approve(self.run_id, cur.step.id, CAROL, **seen)
                else:
                    self.service.done(self.run_id, cur.step.id, CAROL, choice=choice, **seen)
            elif cur.state == StepState.APPROVED and not bot_executes(cur.step):
                self.service.done(self.run_id, cur.step.id, DAVE, choice=choice, **seen)
            elif cur.state in (StepState.FAILED, StepState.UNKNOWN):
                # B4 asks what was done instead; the set-up answers as an operator would (first choice)
                done_choices = list(self.service.mark_done_choices(cur.step))
                done_choice = done_choices[0] if done_choices else None
                for user in (CAROL, DAVE):
                    self.service.vote_mark_done(self.run_id, cur.step.id, user, "set-up", choice=done_choice, **seen)
        raise AssertionError(f"could not reach {step_id}")

    # ------------------------------------------------------------------ rules

    @initialize(start=st.sampled_from(STARTS), initiator=st.sampled_from(OPERATORS))
    def open_run(self, start: tuple[str, list[str], str], initiator: str) -> None:
        direction, args, step_id = start
        run = self.service.open_run(direction, "site-a", args, initiator, "C0INCIDENT")
        self.run_id = run.id
        self.drive_to(step_id)

    @precondition(lambda self: self.service.active_run() is None)
    @rule(start=st.sampled_from(STARTS), initiator=st.sampled_from(OPERATORS))
    def open_the_next_run(self, start: tuple[str, list[str], str], initiator: str) -> None:
        """The run ended (completed or aborted): the next one starts, so the example goes on being useful."""
        self.cards = []
        self.last_click = None
        self.open_run(start, initiator)

    _click_args = {
        "user": st.sampled_from(PEOPLE + APPROVERS),  # approvers more often than not
        "reason": st.sampled_from(["done by hand", "", "   "]),
        "choice_index": st.integers(min_value=0, max_value=2),
    }

    @rule(**_click_args)
    def approve(self, user: str, reason: str, choice_index: int) -> None:
        self.click(user, "approve", 0, reason, choice_index)

    @rule(**_click_args)
    def done(self, user: str, reason: str, choice_index: int) -> None:
        self.click(user, "done", 0, reason, choice_index)

    @rule(**_click_args)
    def mark_done(self, user: str, reason: str, choice_index: int) -> None:
        self.click(user, "mark_done", 0, reason, choice_index)

    @rule(**_click_args)
    def skip(self, user: str, reason: str, choice_index: int) -> None:
        self.click(user, "skip", 0, reason, choice_index)

    @rule(**_click_args)
    def retry(self, user: str, reason: str, choice_index: int) -> None:
        self.click(user, "retry", 0, reason, choice_index)

    @rule(**_click_args, stale=st.integers(min_value=1, max_value=3))
    def approve_on_an_older_message(self, user: str, reason: str, choice_index: int, stale: int) -> None:
        self.click(user, "approve", stale, reason, choice_index)

    @rule(
        **_click_args,
        stale=st.integers(min_value=1, max_value=3),
        button=st.sampled_from(["done", "mark_done", "skip", "retry"]),
    )
    def click_on_an_older_message(self, user: str, reason: str, choice_index: int, stale: int, button: str) -> None:
        self.click(user, button, stale, reason, choice_index)

    def click(self, user: str, button: str, stale: int, reason: str, choice_index: int) -> None:
        """A person clicks a button on the newest message (stale=0) or on one they saw earlier."""
        view = self.service.view(self.run_id)
        cur = view.current
        if cur is None:
            return
        older = [c for c in self.cards if c != self._card(cur)]
        same_step = [c for c in older if c["step"] == cur.step.id]  # an earlier round of this very step
        if stale == 1 and same_step:
            card = dict(same_step[-1])
        elif stale and older:
            card = dict(older[-min(stale, len(older))])
        else:
            card = self._card(cur)
        choices = cur.step.spec.choices or ()
        kwargs: dict[str, Any] = {"round": card["round"], "fingerprint": card["fingerprint"]}
        if button == "done":
            kwargs["choice"] = choices[choice_index % len(choices)] if choices else None
        if button in ("mark_done", "skip"):
            kwargs["reason"] = reason
        self.last_click = (user, button, {"step": card["step"], **kwargs})
        TRIED["stale click" if stale and older else "click"] += 1
        self._press(user, button, card["step"], kwargs)

    @staticmethod
    def _card(sv: Any) -> dict[str, Any]:
        return {"step": sv.step.id, "round": sv.row.attempt, "fingerprint": sv.row.fingerprint or ""}

    def _press(self, user: str, button: str, step_id: str, kwargs: dict[str, Any]) -> None:
        method = {
            "approve": self.service.approve,
            "done": self.service.done,
            "mark_done": self.service.vote_mark_done,
            "skip": self.service.skip,
            "retry": self.service.retry,
        }[button]
        row = self.service.view(self.run_id).step(step_id).row
        try:
            method(self.run_id, step_id, user, **kwargs)
        except UserError as exc:
            self.service.refuse(self.run_id, user, button, str(exc), step_id=step_id)
        else:  # accepted: then it was cast on the message the step has now (finding 3)
            if (kwargs["round"], kwargs["fingerprint"]) != (row.attempt, row.fingerprint or ""):
                self.hosts.violations.append(
                    f"{button} by {user} on {step_id} round {kwargs['round']} accepted in round {row.attempt}"
                )
        self.settle()

    @precondition(lambda self: self.last_click is not None)
    @rule()
    def slack_retries_the_last_click(self) -> None:
        assert self.last_click is not None
        user, button, kwargs = self.last_click
        kwargs = dict(kwargs)
        TRIED["Slack retry"] += 1
        self._press(user, button, kwargs.pop("step"), kwargs)

    @rule(user=st.sampled_from([CAROL, DAVE, MALLORY]))
    def abort_by_someone_who_is_not_an_operator(self, user: str) -> None:
        TRIED["abort"] += 1
        try:
            self.service.abort(self.run_id, user, "not mine to abort")
        except UserError:
            return
        self.hosts.violations.append(f"{user}, not an operator, aborted the run")

    @precondition(lambda self: len(self.cards) >= 4)  # once the run has moved on a little: it ends here
    @rule(user=st.sampled_from(OPERATORS))
    def abort(self, user: str) -> None:
        TRIED["abort"] += 1
        try:
            self.service.abort(self.run_id, user, "random abort")
        except UserError:
            pass
        self.presenter.sync(self.run_id)

    @rule(user=st.sampled_from(PEOPLE))
    def reveal(self, user: str) -> None:
        TRIED["reveal"] += 1
        cur = self.service.view(self.run_id).current
        if cur is None:
            return
        try:
            self.service.check_reveal(self.run_id, cur.step.id, user)
        except UserError:
            return
        self.service.audit_reveal(self.run_id, cur.step.id, user, ["host"])

    @rule()
    def hosts_change_under_the_approval(self) -> None:
        """Someone edits a host by hand: every preview (so every fingerprint) is different from now on."""
        TRIED["host change"] += 1
        self.hosts.version["*"] += 1
        self.settle()

    @rule(
        host=st.sampled_from(["as-a", "as-b", "ss-a1", "ss-a2", "ms-b1", "ms-b2", "-"]),
        kind=st.sampled_from(["execution", "unexpected", "parse"]),
    )
    def host_fault(self, host: str, kind: str) -> None:
        TRIED["host fault"] += 1
        self.hosts.faults[host] = {
            "execution": RemoteOperationFailed(f"{host}: Stop-Service: access denied", host=host),
            "unexpected": RuntimeError("a bug"),
            "parse": ValueError("not well-formed"),
        }[kind]

    @rule()
    def restart(self) -> None:
        """The process dies and starts again on the same database: new service, new worker, recovery."""
        TRIED["restart"] += 1
        self.worker.close()
        self._start_bot()
        self.worker.recover()
        self.settle()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def nothing_accepted_or_executed_against_the_rules(self) -> None:
        assert self.hosts.violations == []

    @invariant()
    def deletes_only_with_the_required_distinct_eligible_people(self) -> None:
        if not self.run_id:
            return
        view = self.service.view(self.run_id)
        need = self.config.slack.destructive_approvals
        for sv in view.steps:
            if sv.step.risk != "destructive":
                continue
            rnd = sv.row.attempt
            if sv.state == StepState.SUCCEEDED:
                people = {v.user_id for v in self.votes(self.run_id, sv.step.id, "approve", rnd)}
            elif sv.state == StepState.MARKED_DONE:
                people = {v.user_id for v in self.votes(self.run_id, sv.step.id, "mark_done", rnd)}
                need = max(2, need)
            elif sv.state == StepState.SKIPPED:
                people = {v.user_id for v in self.votes(self.run_id, sv.step.id, "skip", rnd)}
            else:
                continue
            eligible = {u for u in people if self.eligible(u, sv.step)}
            assert eligible == people and len(eligible) >= need, (sv.step.id, sv.state, people)

    @invariant()
    def each_host_operation_at_most_once(self) -> None:
        if not self.run_id:
            return
        with self.store.read_session() as s:
            events = list(s.scalars(sa.select(AuditEvent).where(AuditEvent.run_id == self.run_id)))
        retries: Counter[tuple[str, str]] = Counter()
        for e in events:
            if e.event == "step.retry":
                retries[(e.step_id or "", e.target or WHOLE)] += 1
        for (run_id, step_id, key), n in self.hosts.executions.items():
            if run_id != self.run_id:
                continue
            allowed = 1 + retries[(step_id, key)] + (retries[(step_id, WHOLE)] if key else 0)
            assert n <= allowed, f"{step_id} {key or ''} executed {n} times with {allowed - 1} retries"

    @invariant()
    def the_audit_trail_verifies(self) -> None:
        if not self.run_id:
            return
        with self.store.read_session() as s:
            for chain in (self.run_id, "-"):
                check = audit.check_run(s, chain)
                assert check.intact, check.problems

    @invariant()
    def no_secret_in_any_posted_text(self) -> None:
        assert self.slack is not None
        secrets = [PASSWORD]
        for guid in self.hosts.guids.values():
            secrets += [guid, otp_from_guid(guid), guid.replace("-", "")]
        posted = self.slack.all_text()  # every string sent to Slack: messages, updates, ephemerals
        for secret in secrets:
            assert secret not in posted, "a secret was posted"
        with self.store.read_session() as s:
            facts = " ".join(r.facts for r in s.scalars(sa.select(Run)))
        for guid in self.hosts.guids.values():
            assert guid not in facts and otp_from_guid(guid) not in facts  # finding 7: never at rest either


@pytest.fixture
def slack() -> Any:
    with FakeSlackApi() as fake:
        yield fake


def test_run_service_rules_hold_under_random_clicks_on_sqlite(tmp_path: Path, slack: FakeSlackApi) -> None:
    class Fresh(RunMachine):  # a fresh database file per example
        def __init__(self) -> None:
            db = tmp_path / f"prop-{uuid.uuid4().hex[:8]}.db"
            type(self).url = f"sqlite:///{db}"
            super().__init__()

    _run_machine_class(Fresh, tmp_path, slack, max_examples=_examples(8), stateful_step_count=30)


@pytest.mark.postgres
def test_run_service_rules_hold_under_random_clicks_on_postgresql(tmp_path: Path, slack: FakeSlackApi) -> None:
    base = normalise_url(pg_url() or "")
    admin = sa.create_engine(base)
    schemas: list[str] = []

    class Fresh(RunMachine):  # a schema of its own per example
        def __init__(self) -> None:
            schema = "p_" + uuid.uuid4().hex[:12]
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            schemas.append(schema)
            sep = "&" if "?" in base else "?"
            type(self).url = f"{base}{sep}options=-csearch_path%3D{schema}"
            super().__init__()

    try:
        _run_machine_class(Fresh, tmp_path, slack, max_examples=_examples(32), stateful_step_count=20)
    finally:
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _examples(per: int) -> int:
    """Examples of a whole run each: an eighth (PostgreSQL: a 32nd) of the profile's, so `ci` (100) gives 12 and 3."""
    return max(3, -(-settings.default.max_examples // per))


def _run_machine_class(cls: type[RunMachine], tmp_path: Path, slack: FakeSlackApi, **hypothesis_settings: Any) -> None:
    config_path = write_config(
        tmp_path / "cfg",
        slack={"operators": OPERATORS, "approvers": APPROVERS, "channels": ["C0INCIDENT"]},
    )
    cls.config_path = config_path
    cls.slack = slack
    cls.TestCase.settings = settings(
        settings.default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        **hypothesis_settings,
    )
    TRIED.clear()
    saved = {k: os.environ.get(k) for k in ("FAILOVER_WINRM_USER", "FAILOVER_WINRM_PASSWORD")}
    os.environ["FAILOVER_WINRM_USER"] = "bot"
    os.environ["FAILOVER_WINRM_PASSWORD"] = PASSWORD  # must never reach Slack
    try:
        cls.TestCase().runTest()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print(f"{cls.__qualname__}: tried {sum(TRIED.values())} random actions: {dict(TRIED)}")
