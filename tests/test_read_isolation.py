"""Read-only checks run apart from clicks: a hanging host they probe never delays an approval (finding 12)."""

from __future__ import annotations

import time
from pathlib import Path

from bot.runs.machine import StepState
from bot.slack_ids import ActionId
from sandbox.rehearsal import rehearsal
from tests.support.platform import write_config

ALICE, BOB = "U0ALICE", "U0BOB"


def test_checks_against_a_hanging_host_do_not_delay_a_click(tmp_path: Path) -> None:
    # A host that answers nothing for a minute: every probe of it waits out the 5 s read timeout.
    config = write_config(tmp_path / "cfg", winrm={"operation_timeout_s": 4, "read_timeout_s": 5})
    with rehearsal(config, tmp_path / "state") as rh:
        for host in ("as-a", "ss-a1", "ss-a2"):
            rh.faults(host, refuse=True)
        fo = rh.start(ALICE, "start site-a")
        assert rh.settled(fo).current.step.id == "F1"  # type: ignore[union-attr]
        rh.faults("ms-b1", latency_ms=60_000)
        bob = rh.person(BOB)
        for _ in range(6):  # more checks than the bot has threads for clicks
            assert bob.command("check site-b").status == 200
        time.sleep(0.5)  # the checks are under way
        clicked = time.monotonic()
        rh.click(ALICE, fo, "F1", ActionId.APPROVE)
        rh.wait_until(
            "F1 approved", lambda: rh.service.view(fo).step("F1").state != StepState.AWAITING_APPROVAL, timeout=30
        )
        waited = time.monotonic() - clicked
        assert waited < 3.0, f"the click waited {waited:.1f} s behind the checks"
        rh.wait_until("F1 done", lambda: rh.service.view(fo).step("F1").state == StepState.SUCCEEDED, timeout=30)
        # the checks still answer, each in its own time
        rh.wait_until(
            "a check's verdict",
            lambda: any("check site-b: some checks FAILED" in e.text for e in rh.slack.ephemerals(BOB)),
            timeout=30,
        )
