"""The Block Kit builders are pure: plain run data in, blocks out — checked without Slack or a database."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.blocks.cards import status_card, step_card
from bot.config import load_config
from bot.runs.runbook import RunOptions, resolve
from bot.runs.service import RunView, StepView
from bot.slack_ids import ActionId, ButtonRef
from bot.store.models import Run, StepRun
from sandbox.slack_api import block_problems
from tests.support.paths import EXAMPLE_CONFIG

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
        e["action_id"] + ":" + e["text"]["text"]: e
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["type"] == "button"
    }


def _menu(blocks: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [
        o["text"]["text"]
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["type"] == "overflow"
        for o in e["options"]
    ]


SETTINGS = load_config(EXAMPLE_CONFIG).slack


def test_destructive_step_opens_with_delete_and_one_red_button_that_opens_the_modal() -> None:
    states = {f"B{i}": "succeeded" for i in range(1, 11)} | {"B4b": "skipped", "B11": "awaiting_approval"}
    view = _view("failback", states, {"B11": ["U0BOB"]})
    blocks = step_card(view, view.step("B11"))
    assert block_problems(blocks) == []
    assert blocks[0]["text"]["text"].startswith("⚠️ DELETE · B11")
    approve = next(b for k, b in _buttons(blocks).items() if k.startswith(ActionId.APPROVE))
    assert approve["text"]["text"] == "Approve delete (1 of 2)"
    assert approve["action_id"] == "step_approve:modal"  # the modal shows the whole DELETE/KEEP list
    assert ButtonRef.decode(approve["value"]) == ButtonRef("FB-3", "B11", 0, "")
    # red means delete: the only red element on the card is the deletion's approval
    red = [b for b in _buttons(blocks).values() if b.get("style") == "danger"]
    assert red == [approve]
    assert "Withdraw my approval" in {b["text"]["text"] for b in _buttons(blocks).values()}
    assert _menu(blocks) == ["Mark done…", "Abort run…"]
    text = json.dumps(blocks)
    assert "1 of 2" in text and "<@U0BOB>" in text
    assert "&lt;IsSlave&gt;True&lt;/IsSlave&gt; &amp; more" in text  # previews are escaped for mrkdwn


def test_buttons_follow_the_step_state() -> None:
    view = _view("failover", {"F0": "succeeded", "F1": "failed"})
    failed = step_card(view, view.step("F1"))
    assert any(k.startswith(ActionId.RETRY) for k in _buttons(failed))
    assert _menu(failed) == ["Mark done…", "Abort run…"]  # F1 is required: no Skip
    done = step_card(view, view.step("F0"))
    assert _buttons(done) == {} and _menu(done) == []  # a finished step has no buttons
    assert len(done) == 1 and done[0]["text"]["text"].startswith("✅ F0 · ")  # collapsed to one line
    view = _view("failover", {f"F{i}": "succeeded" for i in range(8)} | {"F8": "awaiting_approval"})
    f8 = step_card(view, view.step("F8"))
    assert {k.split(":")[-1] for k in _buttons(f8)} >= {"Done", "Done, and DNS was redirected", "I'm on it"}
    assert _menu(f8) == ["Skip…", "Abort run…"]


def test_action_ids_are_unique_in_every_block_of_every_card() -> None:
    """Slack answers invalid_blocks for two step_done buttons in one block (F8, B34) or two step_retry ones."""
    view = _view("failover", {f"F{i}": "succeeded" for i in range(8)} | {"F8": "awaiting_approval"})
    f8 = step_card(view, view.step("F8"))
    assert block_problems(f8) == []
    ids = [e["action_id"] for b in f8 if b["type"] == "actions" for e in b["elements"]]
    assert "step_done:done" in ids and "step_done:done_with_dns_redirect" in ids
    states = {f"B{i}": "succeeded" for i in range(1, 8)} | {"B4b": "skipped", "B8": "failed"}
    view = _view("failback", states)
    b8 = view.step("B8")
    for key in ("ss-a1", "ss-a2"):
        b8.targets[key] = StepRun(run_id="FB-3", step_id="B8", target=key, position=0, state="failed", attempt=0,
                                  error="refused", updated_at=NOW)  # fmt: skip
    card = step_card(view, b8)
    assert block_problems(card) == []
    retry = [e["action_id"] for b in card if b.get("block_id") == "target_actions" for e in b["elements"]]
    assert retry == ["step_retry:ss-a1", "step_retry:ss-a2"]


def test_at_most_one_primary_and_no_input_on_any_card() -> None:
    config = load_config(EXAMPLE_CONFIG)
    for direction in ("failover", "failback"):
        plan = resolve(config, direction, "site-a", RunOptions())  # type: ignore[arg-type]
        for state in ("awaiting_approval", "approved", "failed", "unknown", "running"):
            view = _view(direction, {s.id: state for s in plan.steps}, {s.id: ["U0BOB"] for s in plan.steps})
            for sv in view.steps:
                card = step_card(view, sv, settings=SETTINGS)
                assert block_problems(card) == [], (sv.step.id, state)
                primary = [b for b in _buttons(card).values() if b.get("style") == "primary"]
                assert len(primary) <= 1, (sv.step.id, state)
                assert not any(b["type"] == "input" for b in card)
                red = [b for b in _buttons(card).values() if b.get("style") == "danger"]
                assert not red or sv.step.risk == "destructive", (sv.step.id, state)


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


def test_status_card_names_who_can_act_links_the_step_and_shows_local_times() -> None:
    states = {f"B{i}": "succeeded" for i in range(1, 11)} | {"B4b": "skipped", "B11": "awaiting_approval"}
    view = _view("failback", states)
    settings = SETTINGS.model_copy(update={"approvers": ["U0ALICE", "U0BOB", "U0CAROL"], "approver_groups": []})
    blocks = status_card(view, NOW, settings=settings, links={"B11": "https://slack.test/p1"})
    assert block_problems(blocks) == []
    text = json.dumps(blocks, ensure_ascii=False)
    assert "<@U0BOB> or <@U0CAROL> — not <@U0ALICE>, who started the run" in text
    assert "<https://slack.test/p1|B11 " in text
    assert f"<!date^{int(NOW.timestamp())}^{{time_secs}}|03:00:00 UTC>" in text
    assert "*Next:* B12" in text
    assert _menu(blocks) == ["B11: Mark done…", "Abort run…"]
