"""The Block Kit builders are pure: plain run data in, blocks out — checked without Slack or a database."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.blocks.cards import status_card, step_card
from bot.config import load_config
from bot.runs.runbook import RunOptions, resolve
from bot.runs.service import RunView, StepView
from bot.sandbox.slack_api import block_problems
from bot.slack_ids import ActionId, ButtonRef
from bot.store.models import Run, StepRun
from tests.conftest import EXAMPLE_CONFIG

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def _view(direction: str, states: dict[str, str], approvers: dict[str, list[str]] | None = None) -> RunView:
    config = load_config(EXAMPLE_CONFIG)
    plan = resolve(config, direction, "site-a", RunOptions())  # type: ignore[arg-type]
    run = Run(
        id="FB-3" if direction == "failback" else "FO-3",
        number=3,
        platform="p",
        direction=direction,
        site="site-a",
        partner="site-b",
        scope="all",
        storage="",
        rebuilt=False,
        state="active",
        initiator="U0ALICE",
        channel="C0INCIDENT",
        thread_ts="1.0",
        facts="{}",
        created_at=NOW,
    )
    steps = []
    for step in plan.steps:
        state = states.get(step.id, "pending")
        row = StepRun(
            run_id=run.id,
            step_id=step.id,
            target="",
            position=step.index,
            state=state,
            attempt=0,
            preview="<IsSlave>True</IsSlave> & more" if state != "pending" else None,
            posted_at=NOW,
            updated_at=NOW,
        )
        needed = 2 if step.risk == "destructive" else 1
        steps.append(
            StepView(
                step=step, state=state, targets={}, row=row, approvers=(approvers or {}).get(step.id, []), needed=needed
            )
        )
    return RunView(run=run, plan=plan, steps=steps)


def _buttons(blocks: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {
        e["action_id"] + ":" + e["text"]["text"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]
    }


def test_destructive_step_asks_two_people_behind_a_danger_confirm() -> None:
    states = {f"B{i}": "succeeded" for i in range(1, 11)} | {"B4b": "skipped", "B11": "awaiting_approval"}
    view = _view("failback", states, {"B11": ["U0BOB"]})
    blocks = step_card(view, view.step("B11"))
    assert block_problems(blocks) == []
    approve = next(b for k, b in _buttons(blocks).items() if k.startswith(ActionId.APPROVE))
    assert approve["text"]["text"] == "Approve delete (1 of 2)"
    assert approve["style"] == "danger" and approve["confirm"]["style"] == "danger"
    assert "127.0.20.21:443" in approve["confirm"]["text"]["text"]
    assert ButtonRef.decode(approve["value"]) == ButtonRef("FB-3", "B11", 0, "")
    text = json.dumps(blocks)
    assert "1 of 2" in text and "<@U0BOB>" in text
    assert "&lt;IsSlave&gt;True&lt;/IsSlave&gt; &amp; more" in text  # previews are escaped for mrkdwn


def test_buttons_follow_the_step_state() -> None:
    view = _view("failover", {"F0": "succeeded", "F1": "failed"})
    failed = _buttons(step_card(view, view.step("F1")))
    assert any(k.startswith(ActionId.RETRY) for k in failed)
    assert any(k.startswith(ActionId.MARK_DONE) for k in failed)
    assert not any(k.startswith(ActionId.SKIP) for k in failed)  # F1 is required
    done = _buttons(step_card(view, view.step("F0")))
    assert done == {}  # a finished step has no buttons
    view = _view("failover", {f"F{i}": "succeeded" for i in range(8)} | {"F8": "awaiting_approval"})
    f8 = _buttons(step_card(view, view.step("F8")))
    assert {k.split(":", 1)[1] for k in f8} >= {"Done", "Done, and DNS was redirected", "Skip", "Abort run"}


def test_otp_step_has_a_reveal_button_and_never_a_password() -> None:
    states = {"B1": "succeeded", "B2": "succeeded", "B3": "succeeded", "B4": "succeeded", "B4b": "awaiting_approval"}
    view = _view("failback", states)
    blocks = step_card(view, view.step("B4b"))
    assert any(k.startswith(ActionId.REVEAL_OTP) for k in _buttons(blocks))


def test_status_card_says_who_it_waits_on() -> None:
    view = _view("failover", {"F0": "succeeded", "F1": "awaiting_approval"})
    card = json.dumps(status_card(view, NOW))
    assert "Failover site-a \\u2192 site-b \\u00b7 FO-3" in card or "Failover site-a → site-b · FO-3" in card
    assert "an approver to press Approve" in card and "step 2 of 9" in card
    assert block_problems(status_card(view, NOW)) == []
