"""A whole rehearsal on one machine: simulated platform, Slack stand-in, the bot's HTTP endpoint, three people.

Used by the demo and by the end-to-end tests: the people click exactly what a person would see in the
thread, with signed requests, and wait (with deadlines) for the bot to move on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import Config, load_config
from bot.runs.machine import StepState
from bot.runs.service import RunView, StepView
from bot.runs.worker import bot_executes
from bot.runtime import Runtime, build_runtime
from bot.server import HttpBot, start_up
from bot.slack_ids import ActionId, BlockId, ButtonRef
from bot.store.db import Store
from sandbox.people import ButtonNotFound, SlackPerson, buttons, menu_options
from sandbox.simulator import SimulatedPlatform
from sandbox.slack_api import FakeSlackApi, Message, OpenView

SIGNING_SECRET = "sandbox-signing-secret"  # a rehearsal value, not a secret
BOT_TOKEN = "xoxb-sandbox-token"
CHANNEL = "C0INCIDENT"


class RehearsalError(AssertionError):
    """The rehearsal did not go as a person would expect."""


@dataclass
class Rehearsal:
    config: Config
    platform: SimulatedPlatform
    slack: FakeSlackApi
    runtime: Runtime
    http: HttpBot
    state_dir: Path
    people: dict[str, SlackPerson] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    # What people enter in the modal a step's Done opens, by step (default: B25 "no Group was disabled before").
    forms: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def service(self) -> Any:
        return self.runtime.engine.service

    def person(self, user_id: str) -> SlackPerson:
        return self.people[user_id]

    # ------------------------------------------------------------------ platform state

    def faults(self, host: str, **faults: Any) -> None:
        (self.state_dir / host / "faults.json").write_text(json.dumps(faults), encoding="utf-8")

    def operations(self) -> list[dict[str, Any]]:
        path = self.state_dir / "operations.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # ------------------------------------------------------------------ Slack side

    def thread(self, run_id: str) -> list[Message]:
        run = self.service.get_run(run_id)
        if not run.thread_ts:
            return []
        return self.slack.thread(run.channel, run.thread_ts)

    def message_of(self, run_id: str, step_id: str, timeout: float = 10.0) -> Message:
        """The step's message in the thread, once the bot has posted it."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.service.view(run_id).step(step_id).row
            if row.message_ts and not row.message_ts.startswith("posting"):
                run = self.service.get_run(run_id)
                found = [m for m in self.slack.thread(run.channel, run.thread_ts or "") if m.ts == row.message_ts]
                if found:
                    return found[0]
            if time.monotonic() > deadline:
                raise RehearsalError(f"the bot did not post step {step_id} of {run_id} within {timeout} s")
            time.sleep(0.02)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RehearsalError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def settled(self, run_id: str, timeout: float = 60.0) -> RunView:
        """Wait until the run waits on people (or is finished), and return the view that showed it."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.service.view(run_id)
            if self._waits_on_people(view):
                return view
            if time.monotonic() > deadline:
                raise RehearsalError(f"timed out after {timeout} s waiting for {run_id} to wait on people")
            time.sleep(0.02)

    @staticmethod
    def _waits_on_people(view: RunView) -> bool:
        cur = view.current
        if view.run.state != "active":
            return True
        if cur is None:
            return False  # the worker is about to complete the run
        if cur.state in (StepState.PENDING, StepState.RUNNING):
            return False
        if cur.state == StepState.APPROVED and bot_executes(cur.step):
            return False
        if cur.state == StepState.AWAITING_APPROVAL and len(cur.approvers) >= max(cur.needed, 1):
            return False  # the last approval is being turned into "approved"
        ts = cur.row.message_ts
        return ts is not None and not ts.startswith("posting")

    def start(self, user: str, text: str) -> str:
        before = self.service.last_run()
        resp = self.person(user).command(text, channel=CHANNEL)
        if resp.status != 200:
            raise RehearsalError(f"/failover {text} answered HTTP {resp.status}")
        self.wait_until(
            f"a run opened by /failover {text}",
            lambda: (
                (self.service.last_run() or before) is not before
                and self.service.last_run() is not None
                and (before is None or self.service.last_run().id != before.id)
            ),
        )
        run_id = self.service.last_run().id
        self.log.append(f"{user}: /failover {text} -> {run_id}")
        return str(run_id)

    def click(
        self,
        user: str,
        run_id: str,
        step_id: str,
        action: ActionId,
        value: str | None = None,
        *,
        reason: str | None = None,
        form: dict[str, Any] | None = None,
        wait_for_button: float = 10.0,
    ) -> OpenView | None:
        """Click ``action`` on the step's message as a person would, and fill in the modal it opens.

        Mark done, Skip and Abort are picked in the step's ⋯ menu; their modal gets ``reason``. A modal
        with other inputs gets ``form`` (``{block_id: value}``). Returns the modal, if one opened.
        """
        deadline = time.monotonic() + wait_for_button
        person = self.person(user)
        while True:
            msg = self.message_of(run_id, step_id)
            try:
                resp = self._press(person, msg, action, value)
                break
            except ButtonNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if resp.status != 200:
            raise RehearsalError(f"click {action} on {step_id} answered HTTP {resp.status}")
        self.log.append(f"{user}: {action} on {step_id}" + (f" ({reason})" if reason else ""))
        opened = self.slack.view_for_trigger(person.last_trigger_id or "")
        if opened is None:
            return None
        values = {**(form or {}), **({str(BlockId.REASON): reason} if reason is not None else {})}
        answer = person.submit_view(opened, values)
        if answer.status != 200:
            raise RehearsalError(f"submitting the {opened.callback_id} form of {step_id} answered HTTP {answer.status}")
        return opened

    @staticmethod
    def _press(person: SlackPerson, msg: Message, action: ActionId, value: str | None) -> Any:
        override = {ActionId.MARK_DONE: "mark_done", ActionId.SKIP: "skip", ActionId.ABORT: "abort"}.get(action)
        if override is not None:
            options = [o for o in menu_options(msg.blocks) if ButtonRef.decode(o.value).extra == override]
            if options:
                return person.choose(msg, options[0].action_id, options[0].value)
            plain = [b for b in buttons(msg.blocks) if b.value and ButtonRef.decode(b.value).extra == override]
            if not plain:
                raise ButtonNotFound(f"no {override} in the menu of message {msg.ts}")
            return person.click(msg, plain[0].action_id, plain[0].value)
        found = [
            b
            for b in buttons(msg.blocks)
            if b.action_id.split(":", 1)[0] == str(action) and (value is None or b.value == value)
        ]
        if not found:
            return person.click(msg, str(action), value)  # raises ButtonNotFound listing what is there
        return person.click(msg, found[0].action_id, found[0].value)

    def run_through(
        self,
        run_id: str,
        *,
        initiator: str,
        approvers: tuple[str, str],
        choices: dict[str, str] | None = None,
        reveal: bool = True,
        override_reason: str | None = None,
    ) -> RunView:
        """Click through every step as the people would, until the run is finished."""
        choices = choices or {}
        first, second = approvers
        revealed: set[str] = set()
        for _ in range(400):
            view = self.settled(run_id)
            cur = view.current
            if view.run.state != "active" or cur is None:
                return view
            if reveal and cur.step.spec.otp and cur.step.id not in revealed:
                revealed.add(cur.step.id)
                self.click(first, run_id, cur.step.id, ActionId.REVEAL_OTP)
            self.act_once(run_id, cur, approvers, choices, override_reason)
        raise RehearsalError(f"{run_id} did not finish")

    def act_once(
        self,
        run_id: str,
        cur: StepView,
        approvers: tuple[str, str],
        choices: dict[str, str] | None = None,
        override_reason: str | None = None,
    ) -> None:
        """Do what the current step asks of people, once, and wait until the bot has taken it in."""
        step_id = cur.step.id
        before = (cur.state, cur.row.attempt, len(cur.approvers), len(cur.mark_done_votes))
        self._act(run_id, cur, approvers[0], approvers[1], choices or {}, override_reason)
        self.wait_until(f"{step_id} to move on", lambda: self._moved(run_id, step_id, before))

    def _moved(self, run_id: str, step_id: str, before: tuple[Any, ...]) -> bool:
        sv = self.service.view(run_id).step(step_id)
        return (sv.state, sv.row.attempt, len(sv.approvers), len(sv.mark_done_votes)) != before

    def _act(
        self, run_id: str, cur: StepView, first: str, second: str, choices: dict[str, str], override_reason: str | None
    ) -> None:
        step = cur.step
        if cur.state == StepState.FAILED:
            if step.id == "F0" and override_reason:
                voter = second if first in cur.mark_done_votes else first
                self.click(voter, run_id, step.id, ActionId.MARK_DONE, reason=override_reason)
                return
            raise RehearsalError(f"step {step.id} failed: {cur.row.error}")
        if cur.state == StepState.AWAITING_APPROVAL:
            if step.risk == "destructive":
                self.click(second if first in cur.approvers else first, run_id, step.id, ActionId.APPROVE)
            elif bot_executes(step):
                self.click(first, run_id, step.id, ActionId.APPROVE)
            else:
                self._done(run_id, cur, second, choices)
            return
        if cur.state == StepState.APPROVED and not bot_executes(step):
            self._done(run_id, cur, second, choices)
            return
        raise RehearsalError(f"step {step.id} is {cur.state}; nothing a person can do")

    def _done(self, run_id: str, cur: StepView, user: str, choices: dict[str, str]) -> None:
        options = cur.step.spec.choices
        value = None
        if options:
            value = ButtonRef(
                run_id, cur.step.id, cur.row.attempt, choices.get(cur.step.id, options[0]), cur.row.fingerprint or ""
            ).encode()
        form = self.forms.get(cur.step.id, {str(BlockId.NONE_DISABLED): ["none"]})
        self.click(user, run_id, cur.step.id, ActionId.DONE, value, form=form)


@contextmanager
def environment(values: Mapping[str, str | None], *, keep_existing: bool = False) -> Iterator[None]:
    """Set environment variables for a while (None removes one) and put back what was there before.

    ``keep_existing`` leaves a variable that is already set alone (a caller's own credentials win).
    """
    saved: dict[str, str | None] = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            elif not (keep_existing and k in os.environ):
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


@contextmanager
def rehearsal(
    config_path: Path, state_dir: Path, *, db_url: str | None = None, people: dict[str, str] | None = None
) -> Iterator[Rehearsal]:
    """Start everything on loopback; stop everything on exit."""
    config = load_config(config_path)
    platform = SimulatedPlatform(config, state_dir)
    env = {
        "FAILOVER_WINRM_USER": "rehearsal-admin",
        "FAILOVER_WINRM_PASSWORD": "rehearsal-password",
        **platform.odbc_env(),
    }
    with environment(env, keep_existing=True):
        config = load_config(config_path)  # the bot's configuration reads the credentials just set, once
        platform.start()
        names = people or {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol"}
        slack = FakeSlackApi(token=BOT_TOKEN, users=names).start()  # users.info names them
        store = Store(db_url or f"sqlite:///{state_dir / 'failover-bot.db'}")
        runtime = build_runtime(
            config,
            store=store,
            token=BOT_TOKEN,
            signing_secret=SIGNING_SECRET,
            api_url=slack.api_url,
            post_interval_s=0,
        )
        start_up(runtime)
        http = HttpBot(runtime).start()
        try:
            r = Rehearsal(config, platform, slack, runtime, http, state_dir)
            for uid, name in names.items():
                r.people[uid] = SlackPerson(uid, name, bot_url=http.url, signing_secret=SIGNING_SECRET, slack=slack)
            yield r
        finally:
            http.stop()  # stops answering; the work people already queued is finished by runtime.close()
            runtime.close()
            slack.stop()
            platform.stop()
