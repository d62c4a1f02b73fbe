"""The thread people read at 3 a.m., through signed requests: modals, the ⋯ menu, pings, the status card's
refresh, Slack's refusals, and what people enter (B25's Groups) carried to B36 and the report."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.blocks.render import render_blocks
from bot.report import build_report
from bot.runs.machine import StepState
from bot.slack_ids import ActionId, BlockId, ButtonRef
from sandbox.people import FormIncomplete, menu_options
from sandbox.rehearsal import CHANNEL, Rehearsal, rehearsal
from tests.support.platform import write_config

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[Rehearsal]:
    with rehearsal(write_config(tmp_path / "cfg"), tmp_path / "state") as r:
        yield r


def _site_a_down(rh: Rehearsal) -> None:
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)


def _ephemeral(rh: Rehearsal, user: str, needle: str) -> str:
    found: list[str] = []

    def seen() -> bool:
        found[:] = [e.text for e in rh.slack.ephemerals(user) if needle in e.text]
        return bool(found)

    rh.wait_until(f"an answer to {user} containing {needle!r}", seen, timeout=20)
    return found[-1]


def _walk_to(rh: Rehearsal, run_id: str, step_id: str) -> None:
    for _ in range(200):
        view = rh.settled(run_id)
        assert view.current is not None
        if view.current.step.id == step_id:
            return
        rh.act_once(run_id, view.current, (BOB, CAROL))
    raise AssertionError(f"never reached {step_id}")


def test_mark_done_opens_a_modal_from_the_menu_and_the_vote_is_cast_on_submit(rh: Rehearsal) -> None:
    fo = rh.start(ALICE, "start site-a scope=account")  # site-a is healthy: F0 stops for split-brain
    view = rh.settled(fo)
    assert view.current is not None and view.current.state == StepState.FAILED
    rh.wait_until("F0's card shows the failure", lambda: bool(menu_options(rh.message_of(fo, "F0").blocks)))
    f0 = rh.message_of(fo, "F0")
    assert not any(b["type"] == "input" for b in f0.blocks)  # no input blocks on cards
    assert [o.text for o in menu_options(f0.blocks)] == ["Mark done…", "Abort run…"]
    # the ⋯ menu opens a modal (views.open with the click's trigger_id) that asks for a reason
    bob = rh.person(BOB)
    option = next(o for o in menu_options(f0.blocks) if ButtonRef.decode(o.value).extra == "mark_done")
    assert bob.choose(f0, option.action_id, option.value).status == 200
    modal = rh.slack.view_for_trigger(bob.last_trigger_id or "")
    assert modal is not None and modal.callback_id == "modal_mark_done"
    meta = json.loads(modal.private_metadata)
    assert meta["run"] == fo and meta["step"] == "F0" and meta["round"] == 0 and meta["fp"]
    with pytest.raises(FormIncomplete):
        bob.submit_view(modal, {})  # Slack keeps a modal with an empty required input open
    answer = bob.submit_view(modal, {str(BlockId.REASON): "   "}).json()
    assert answer["response_action"] == "errors" and str(BlockId.REASON) in answer["errors"]
    assert rh.service.view(fo).step("F0").mark_done_votes == []  # nothing counted
    bob.submit_view(modal, {str(BlockId.REASON): "as-a is cut off from the network"})
    _ephemeral(rh, BOB, "Mark done recorded (1 of 2)")
    assert rh.service.view(fo).step("F0").mark_done_votes == [BOB]
    rh.wait_until(
        "the menu counts the vote",
        lambda: "Mark done… (1 of 2)" in json.dumps(rh.message_of(fo, "F0").blocks, ensure_ascii=False),
    )
    rh.click(CAROL, fo, "F0", ActionId.MARK_DONE, reason="confirmed: as-a isolated")
    rh.wait_until("F0 marked done", lambda: rh.service.view(fo).step("F0").state == StepState.MARKED_DONE)
    events = build_report(rh.runtime.store, fo).events
    votes = [e for e in events if e["event"] == "mark_done.vote"]
    assert [v["detail"]["reason"] for v in votes] == ["as-a is cut off from the network", "confirmed: as-a isolated"]


def test_a_modal_opened_before_the_step_moved_on_changes_nothing(rh: Rehearsal) -> None:
    _site_a_down(rh)
    fo = rh.start(ALICE, "start site-a")
    _walk_to(rh, fo, "F1")
    f1 = rh.message_of(fo, "F1")
    bob = rh.person(BOB)
    option = next(o for o in menu_options(f1.blocks) if ButtonRef.decode(o.value).extra == "mark_done")
    bob.choose(f1, option.action_id, option.value)
    stale = rh.slack.view_for_trigger(bob.last_trigger_id or "")
    assert stale is not None
    rh.click(CAROL, fo, "F1", ActionId.APPROVE)  # F1 runs and succeeds meanwhile
    rh.wait_until("F1 done", lambda: rh.service.view(fo).step("F1").state == StepState.SUCCEEDED)
    answer = bob.submit_view(stale, {str(BlockId.REASON): "done by hand"}).json()
    assert answer["response_action"] == "update"  # the modal now says why nothing was done
    assert "no longer current" in json.dumps(answer["view"]["blocks"])
    assert rh.service.view(fo).step("F1").mark_done_votes == []


def test_the_modal_opens_even_when_the_work_pool_is_busy(rh: Rehearsal) -> None:
    """trigger_ids expire in 3 s: views.open happens on the request thread, never queued behind other work."""
    _site_a_down(rh)
    fo = rh.start(ALICE, "start site-a")
    _walk_to(rh, fo, "F1")
    f1 = rh.message_of(fo, "F1")
    release = threading.Event()
    for _ in range(8):
        rh.runtime.context.work.submit(release.wait, 10)
    try:
        bob = rh.person(BOB)
        option = next(o for o in menu_options(f1.blocks) if ButtonRef.decode(o.value).extra == "abort")
        started = time.monotonic()
        assert bob.choose(f1, option.action_id, option.value).status == 200
        assert rh.slack.view_for_trigger(bob.last_trigger_id or "") is not None
        assert time.monotonic() - started < 3.0
        assert [c for c in rh.slack.calls("views.open") if c.error] == []
    finally:
        release.set()


def test_pings_once_names_who_can_act_and_i_am_on_it(rh: Rehearsal) -> None:
    _site_a_down(rh)
    fo = rh.start(ALICE, "start site-a")
    _walk_to(rh, fo, "F5")  # a Console step
    posts = [c for c in rh.slack.calls("chat.postMessage") if str(c.params.get("text", "")).startswith("F5 ")]
    assert len(posts) == 1 and "<@U0BOB>" in posts[0].params["text"] and "<@U0CAROL>" in posts[0].params["text"]
    assert "subteam" not in json.dumps([c.params for c in rh.slack.calls("chat.postMessage")])  # no group pings
    updates = [c for c in rh.slack.calls("chat.update") if str(c.params.get("text", "")).startswith("F5 ")]
    assert all("<@" not in str(u.params["text"]) for u in updates)  # an edit pings nobody again
    rh.click(BOB, fo, "F5", ActionId.ON_IT)
    rh.wait_until("bob holds F5", lambda: "on it: <@U0BOB>" in json.dumps(rh.message_of(fo, "F5").blocks))
    assert "I'm on it" not in json.dumps(rh.message_of(fo, "F5").blocks)
    rh.wait_until(
        "the status card says who holds it", lambda: "*On it:* <@U0BOB>" in json.dumps(rh.thread(fo)[0].blocks)
    )
    rh.person(ALICE).command("status")
    _ephemeral(rh, ALICE, "On it: <@U0BOB>")
    assert any(e["event"] == "step.on_it" for e in build_report(rh.runtime.store, fo).events)


def test_status_card_refresh_is_paced_by_a_controllable_clock(rh: Rehearsal) -> None:
    _site_a_down(rh)
    fo = rh.start(ALICE, "start site-a")
    _walk_to(rh, fo, "F1")
    presenter = rh.runtime.engine.presenter
    rh.runtime.refresher.close()  # this test drives the refresh itself
    now = [presenter.clock() + timedelta(seconds=1)]
    presenter.clock = lambda: now[0]
    root = rh.thread(fo)[0].ts

    def card_updates() -> int:
        return len([c for c in rh.slack.calls("chat.update") if c.params.get("ts") == root and c.error is None])

    presenter.refresh()
    time.sleep(0.5)  # a sync another thread was doing has finished
    before = card_updates()
    now[0] += timedelta(seconds=30)
    assert presenter.refresh() is False and card_updates() == before  # not due yet: no update
    now[0] += timedelta(seconds=31)
    assert presenter.refresh() is True
    rh.wait_until("the card refreshed", lambda: card_updates() == before + 1, timeout=5)  # one chat.update
    time.sleep(0.3)
    assert card_updates() == before + 1
    card = json.dumps(rh.thread(fo)[0].blocks, ensure_ascii=False)
    assert "for 1 min" in card  # waiting on an approver for over a minute, as the card now says
    assert "<!date^" in card  # every reader sees times in their own zone
    assert "/archives/" in card  # the current step is linked


def test_slack_refusing_a_step_message_is_said_in_plain_words_and_on_the_card(rh: Rehearsal) -> None:
    _site_a_down(rh)
    fo = rh.start(ALICE, "start site-a")
    _walk_to(rh, fo, "F1")
    rh.slack.fail("chat.postMessage", "invalid_blocks", times=1)  # F2's message will be refused
    rh.click(BOB, fo, "F1", ActionId.APPROVE)

    def said() -> bool:
        return any("Slack refused the message of step F2" in m.text for m in rh.thread(fo))

    rh.wait_until("the refusal in the thread", said)
    assert any("Slack refused the message of step F2" in m.text for m in rh.slack.channel_messages(CHANNEL))
    rh.wait_until(
        "the status card shows it",
        lambda: "Slack refused the message of step F2" in json.dumps(rh.thread(fo)[0].blocks),
    )
    rh.runtime.engine.presenter.sync(fo)  # the next pass posts it after all, and the card says no more
    rh.message_of(fo, "F2")
    rh.wait_until("card clear", lambda: "Slack refused" not in json.dumps(rh.thread(fo)[0].blocks))


def test_not_in_channel_opens_no_run(rh: Rehearsal) -> None:
    rh.slack.not_member.add(CHANNEL)
    rh.person(ALICE).command("start site-a", channel=CHANNEL)
    answer = _ephemeral(rh, ALICE, "Invite me")
    assert "not_in_channel" in answer and "nothing was done" in answer
    assert rh.service.active_run() is None  # no run left open: a second start is not refused
    rh.slack.not_member.clear()
    _site_a_down(rh)
    fo = rh.start(ALICE, "start site-a")
    rh.wait_until("the status card", lambda: bool(rh.thread(fo)))
    assert rh.service.get_run(fo).state == "active"


def test_plan_in_slack_is_one_line_per_step_and_never_cut_off(rh: Rehearsal) -> None:
    rh.person(BOB).command("plan failback site-a")
    rh.wait_until(
        "the plan", lambda: any("failover-bot plan failback site-a" in e.text for e in rh.slack.ephemerals(BOB))
    )
    text = "\n".join(e.text for e in rh.slack.ephemerals(BOB))
    plan = rh.service.plan_of  # the same plan the bot resolves
    del plan
    for step in ("B1", "B4b", "B11", "B25", "B28", "B36", "B37"):
        assert f"`{step}` " in text, step
    assert "*DELETE*" in text and "```" not in text
    # ... and the full plan, every value and instruction, as a file in the channel (issue 14 item 5)
    rh.wait_until("the full plan as a file", lambda: bool(rh.slack.files(CHANNEL)))
    [upload] = rh.slack.files(CHANNEL)
    assert upload.filename == "plan-failback-site-a.txt" and upload.content is not None
    full = upload.content.decode("utf-8")
    assert full.startswith("Failback to site-a") and "Settings.xml" in full
    for step in ("B1", "B4b", "B11", "B25", "B28", "B36", "B37"):
        assert f"{step} " in full, step
    assert "DELETE" in full and "KEEP" in full


def test_failback_delete_modals_withdraw_and_b25_groups_reach_b36_and_the_report(rh: Rehearsal) -> None:
    for host in ("ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)
    fo = rh.start(ALICE, "start site-a scope=storage")
    assert rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL)).run.state == "completed"
    for host in ("ss-a1", "ss-a2"):
        rh.faults(host)
    fb = rh.start(ALICE, "failback site-a")
    _walk_to(rh, fb, "B11")
    # approve, then withdraw before the second approver: the step is back to 0 of 2
    rh.click(BOB, fb, "B11", ActionId.APPROVE)
    rh.wait_until("1 of 2", lambda: rh.service.view(fb).step("B11").approvers == [BOB])
    rh.click(BOB, fb, "B11", ActionId.WITHDRAW)
    rh.wait_until("withdrawn", lambda: rh.service.view(fb).step("B11").approvers == [])
    _ephemeral(rh, BOB, "withdrawn")
    rh.wait_until(
        "the card says 0 of 2", lambda: "Approve delete (0 of 2)" in json.dumps(rh.message_of(fb, "B11").blocks)
    )
    # Mark done on a deletion shows the same DELETE block and says it counts under the delete rules
    modal = rh.click(BOB, fb, "B11", ActionId.MARK_DONE, reason="deleted by hand")
    assert modal is not None
    shown = json.dumps(modal.view["blocks"])
    assert "This is a deletion" in shown and "DELETE" in shown
    _walk_to(rh, fb, "B25")
    # B25's Done opens a modal that asks for the Groups already disabled; an empty answer is refused
    b25 = rh.message_of(fb, "B25")
    carol = rh.person(CAROL)
    done = next(b for b in b25.blocks if b["type"] == "actions")["elements"][0]
    assert done["action_id"] == "step_done:modal"
    carol.click(b25, done["action_id"], done["value"])
    form = rh.slack.view_for_trigger(carol.last_trigger_id or "")
    assert form is not None
    answer = carol.submit_view(form, {}).json()
    assert answer["response_action"] == "errors" and str(BlockId.GROUPS) in answer["errors"]
    carol.submit_view(form, {str(BlockId.GROUPS): "Legacy accounts\nArchive <old>\n"})
    rh.wait_until("B25 done", lambda: rh.service.view(fb).step("B25").state == StepState.SUCCEEDED)
    assert rh.service.facts(fb)["disabled_groups"] == ["Legacy accounts", "Archive <old>"]
    _walk_to(rh, fb, "B36")
    b36 = render_blocks(rh.message_of(fb, "B36").blocks)
    assert "Recorded at B25" in b36 and "Legacy accounts, Archive <old>" in b36
    assert "Archive &lt;old&gt;" in json.dumps(rh.message_of(fb, "B36").blocks)  # escaped for mrkdwn
    report = build_report(rh.runtime.store, fb).to_markdown()
    assert "Legacy accounts" in report and "step.recorded" in report


def test_abort_from_the_status_card_menu_asks_an_operator_for_a_reason(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", slack={"operators": [ALICE], "approvers": [ALICE, BOB, CAROL]})
    with rehearsal(cfg, tmp_path / "state") as rh:
        _site_a_down(rh)
        fo = rh.start(ALICE, "start site-a")
        _walk_to(rh, fo, "F1")
        rh.wait_until("the card's menu", lambda: bool(menu_options(rh.thread(fo)[0].blocks)))
        card = rh.thread(fo)[0]
        options = {o.text: o for o in menu_options(card.blocks)}
        assert set(options) == {"F1: Mark done…", "Abort run…"}
        abort = options["Abort run…"]
        bob = rh.person(BOB)  # an approver but not an operator: no form opens
        bob.choose(card, abort.action_id, abort.value)
        _ephemeral(rh, BOB, "Only operators may abort")
        assert rh.slack.views(BOB, open_only=False) == []
        alice = rh.person(ALICE)
        alice.choose(card, abort.action_id, abort.value)
        modal = rh.slack.view_for_trigger(alice.last_trigger_id or "")
        assert modal is not None and modal.callback_id == "modal_abort"
        alice.submit_view(modal, {str(BlockId.REASON): "<!channel> site-a came back"})
        rh.wait_until("aborted", lambda: rh.service.get_run(fo).state == "aborted")
        assert rh.service.get_run(fo).abort_reason == "<!channel> site-a came back"
        rh.wait_until("the card says so", lambda: "aborted" in json.dumps(rh.thread(fo)[0].blocks))
        rh.wait_until("the broadcast", lambda: any("aborted:" in m.text for m in rh.thread(fo)))
        assert "<!channel>" not in json.dumps([(m.text, m.blocks) for m in rh.thread(fo)])  # escaped: pings nobody


def test_mark_done_on_b4_asks_in_the_modal_whether_the_row_was_edited_by_hand(rh: Rehearsal) -> None:
    """Issue 9 item 7 in Slack: B4's Mark done modal asks "edited by hand" (B4b not needed) or "not done"
    (B4b needed); without the question the service refuses every Mark done of B4."""
    rh.faults("as-a", refuse=True)
    fo = rh.start(ALICE, "start site-a scope=account")
    assert rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL)).run.state == "completed"
    rh.faults("as-a")
    fb = rh.start(ALICE, "failback site-a scope=account")
    _walk_to(rh, fb, "B4")
    b4 = rh.message_of(fb, "B4")
    bob = rh.person(BOB)
    option = next(o for o in menu_options(b4.blocks) if ButtonRef.decode(o.value).extra == "mark_done")
    bob.choose(b4, option.action_id, option.value)
    modal = rh.slack.view_for_trigger(bob.last_trigger_id or "")
    assert modal is not None and modal.callback_id == "modal_mark_done"
    choice_block = next(b for b in modal.view["blocks"] if b.get("block_id") == str(BlockId.CHOICE))
    assert choice_block["element"]["type"] == "radio_buttons" and not choice_block.get("optional")
    assert [o["value"] for o in choice_block["element"]["options"]] == ["edited_by_hand", "not_done"]
    with pytest.raises(FormIncomplete):  # Slack keeps the modal open until a choice is made
        bob.submit_view(modal, {str(BlockId.REASON): "edited in SSMS"})
    bob.submit_view(modal, {str(BlockId.REASON): "edited in SSMS", str(BlockId.CHOICE): "edited_by_hand"})
    _ephemeral(rh, BOB, "Mark done recorded (1 of 2)")
    rh.click(CAROL, fb, "B4", ActionId.MARK_DONE, reason="row checked", form={str(BlockId.CHOICE): "edited_by_hand"})
    rh.wait_until("B4 marked done", lambda: rh.service.view(fb).step("B4").state == StepState.MARKED_DONE)
    assert rh.service.facts(fb)["outcome:B4"] == "matched"
    rh.wait_until("B4b not needed", lambda: rh.service.view(fb).step("B4b").state == StepState.SKIPPED)
