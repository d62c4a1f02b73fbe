"""Text from people, hosts and the database reaches Slack inert: no channel pings, no disguised links."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.steps import services
from bot.blocks.text import escape_mrkdwn
from bot.runs.machine import StepState
from bot.slack_ids import ActionId
from sandbox.rehearsal import Rehearsal, rehearsal
from tests.support.platform import write_config

ALICE, BOB = "U0ALICE", "U0BOB"
CHANNEL = "C0INCIDENT"
PING = "<!channel>"
LINK = "<https://evil.example|https://slack.com/approve>"
LIVE = ("<!channel>", "<!here>", "<!everyone>", "<https://evil.example")


@pytest.fixture
def rh(tmp_path: Path) -> Iterator[Rehearsal]:
    with rehearsal(write_config(tmp_path / "cfg"), tmp_path / "state") as r:
        yield r


def _site_a_down(rh: Rehearsal) -> None:
    for host in ("as-a", "ss-a1", "ss-a2"):
        rh.faults(host, refuse=True)


def _assert_inert(rh: Rehearsal) -> None:
    sent = rh.slack.all_text()
    for live in LIVE:
        assert live not in sent, f"{live} reached Slack as live mrkdwn"


def test_escape_mrkdwn_makes_mentions_and_links_inert() -> None:
    assert escape_mrkdwn(f"a & b {PING} {LINK}") == (
        "a &amp; b &lt;!channel&gt; &lt;https://evil.example|https://slack.com/approve&gt;"
    )
    assert escape_mrkdwn("&lt;") == "&amp;lt;"  # an entity typed by a person stays as typed
    kept = escape_mrkdwn("ask <@U0BOB> in <#C0INCIDENT> or <!subteam^S0APPROVE>; <!here>", keep_references=True)
    assert kept == "ask <@U0BOB> in <#C0INCIDENT> or <!subteam^S0APPROVE>; &lt;!here&gt;"


def test_abort_reason_with_a_channel_ping_and_a_disguised_link_is_broadcast_inert(rh: Rehearsal) -> None:
    _site_a_down(rh)
    fo = rh.start(ALICE, "start site-a")
    rh.settled(fo)
    rh.person(BOB).command(f"abort {PING} approve here {LINK}")
    rh.wait_until(
        "the abort broadcast",
        lambda: any("aborted" in m.text and m.reply_broadcast for m in rh.slack.channel_messages(CHANNEL)),
    )
    assert rh.service.get_run(fo).abort_reason == f"{PING} approve here {LINK}"  # stored as typed
    broadcast = next(m for m in rh.slack.channel_messages(CHANNEL) if "aborted" in m.text and m.reply_broadcast)
    assert "&lt;!channel&gt; approve here &lt;https://evil.example|https://slack.com/approve&gt;" in broadcast.text
    rh.wait_until("the status card shows the reason", lambda: "*Aborted:* &lt;!channel&gt;" in rh.slack.all_text())
    _assert_inert(rh)


def test_a_host_error_with_mrkdwn_is_shown_inert(rh: Rehearsal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "SERVICE_TIMEOUT_S", 1.0)
    _site_a_down(rh)
    rh.faults("as-b", stuck={"Attix5ProAccountServer": f"{PING} {LINK}"})  # the remote error quotes this
    fo = rh.start(ALICE, "start site-a")
    view = rh.settled(fo)
    assert view.current is not None and view.current.step.id == "F1"
    rh.click(BOB, fo, "F1", ActionId.APPROVE)
    rh.wait_until("F1 to fail", lambda: rh.service.view(fo).step("F1").state == StepState.FAILED)
    rh.wait_until(
        "the failure broadcast",
        lambda: any("failed" in m.text and m.reply_broadcast for m in rh.slack.channel_messages(CHANNEL)),
    )
    assert PING in (rh.service.view(fo).step("F1").row.error or "")  # the host really said it
    broadcast = next(m for m in rh.slack.channel_messages(CHANNEL) if "failed" in m.text and m.reply_broadcast)
    assert "&lt;!channel&gt;" in broadcast.text
    rh.wait_until("the step card shows the error", lambda: "Failed" in str(rh.message_of(fo, "F1").blocks))
    _assert_inert(rh)


def test_what_a_person_typed_is_quoted_inert_in_refusals(rh: Rehearsal) -> None:
    rh.person(BOB).command(f"status {PING}{LINK}")
    rh.wait_until("the refusal", lambda: any("&lt;!channel&gt;" in e.text for e in rh.slack.ephemerals(BOB)))
    _assert_inert(rh)
