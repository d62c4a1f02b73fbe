"""The presenter re-renders into Slack only the cards whose content changed (issue 12): a change that leaves a
card as it is sends no chat.update, and the status card's clock alone moves only with the paced refresh."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.slack_ids import ActionId
from sandbox.rehearsal import Rehearsal, rehearsal
from tests.support.platform import write_config

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
_CLOCK = re.compile(r"<!date\^\d+\^[^|>]*\|[^>]*>|\d+(?:\.\d+)? s\b|\d+ min\b|\d+ h\b")


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[Rehearsal]:
    with rehearsal(write_config(tmp_path / "cfg"), tmp_path / "state") as r:
        yield r


def _walk_to(rh: Rehearsal, run_id: str, step_id: str) -> None:
    for _ in range(200):
        view = rh.settled(run_id)
        assert view.current is not None
        if view.current.step.id == step_id:
            return
        rh.act_once(run_id, view.current, (BOB, CAROL))
    raise AssertionError(f"never reached {step_id}")


def _updates(rh: Rehearsal, ts: str | None = None) -> list[Any]:
    return [c for c in rh.slack.calls("chat.update") if c.error is None and (ts is None or c.params.get("ts") == ts)]


def _without_clock(blocks: Any) -> str:
    return _CLOCK.sub("<clock>", str(blocks))


def test_a_change_that_leaves_every_card_as_it_is_sends_no_update(rh: Rehearsal) -> None:
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)
    fo = rh.start(ALICE, "start site-a")
    _walk_to(rh, fo, "F1")  # waits on an approver
    rh.runtime.refresher.close()  # the paced refresh is another test's subject
    presenter = rh.runtime.engine.presenter
    assert presenter is not None
    now = [presenter.clock()]
    presenter.clock = lambda: now[0]
    time.sleep(0.5)  # a sync another thread was doing has finished
    root = rh.thread(fo)[0].ts
    before = len(_updates(rh))
    for _ in range(5):  # five changes that change nothing a card shows, seconds apart
        now[0] += timedelta(seconds=3)
        rh.runtime.engine.changed(fo, "nothing a card shows")
    assert len(_updates(rh)) == before  # the old presenter updated the status card each time (its clock moved)
    on_root = len(_updates(rh, root))
    rh.click(BOB, fo, "F1", ActionId.APPROVE)  # a real change: the card follows
    rh.wait_until("the status card follows the approval", lambda: len(_updates(rh, root)) > on_root)


def test_every_status_card_update_during_a_run_changes_more_than_its_clock(rh: Rehearsal) -> None:
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)
    fo = rh.start(ALICE, "start site-a")
    _walk_to(rh, fo, "F4")
    root = rh.thread(fo)[0].ts
    shown = [_without_clock(c.params.get("blocks")) for c in _updates(rh, root)]
    assert len(shown) >= 3
    same = [i for i in range(1, len(shown)) if shown[i] == shown[i - 1]]
    assert same == [], f"{len(same)} of {len(shown)} status card updates changed only its clock"
