"""Readiness between disasters: rounds on a controllable clock against the simulated platform over real WinRM.

Each change on the platform (a stopped service, an edited IsSlave, a host refusing connections) is
announced once in the readiness channel, again only after ``repeat_hours``, and its recovery once; two
running Masters are an immediate ``<!here>`` alert; an active run's own changes are not announced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from slack_sdk import WebClient

from actions import settings_xml
from bot.config import Config, load_config
from bot.errors import ConfigError
from bot.presenter import Presenter
from bot.readiness.watch import ReadinessWatch
from bot.runs.service import RunService
from bot.store.db import Store
from bot.store.models import ReadinessResult
from sandbox.simulator import SimulatedPlatform
from sandbox.slack_api import DEFAULT_TOKEN, FakeSlackApi, Message
from tests.support.platform import running_platform, write_config

CHANNEL = "C0INCIDENT"
SERVICE = "Attix5ProAccountServer"


class Clock:
    def __init__(self) -> None:
        from bot.store.db import utcnow

        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> Any:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Watched:
    config: Config
    platform: SimulatedPlatform
    state: Path
    slack: FakeSlackApi
    store: Store
    service: RunService
    presenter: Presenter
    watch: ReadinessWatch
    clock: Clock

    def round(self) -> list[Message]:
        """Run one round; the channel messages it posted."""
        before = len(self.slack.channel_messages(CHANNEL))
        report = self.watch.run_round()
        assert report is not None
        return self.slack.channel_messages(CHANNEL)[before:]

    def set_service(self, host: str, state: str) -> None:
        path = self.state / host / "services.json"
        services = json.loads(path.read_text())
        services[SERVICE if host.startswith("as-") else "Attix5ProStorageServer"] = state
        path.write_text(json.dumps(services))

    def settings_path(self, host: str) -> Path:
        return self.state / host / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "Settings.xml"

    def set_is_slave(self, host: str, value: bool) -> None:
        path = self.settings_path(host)
        path.write_bytes(settings_xml.set_is_slave(path.read_bytes(), value, add_if_absent=True))

    def faults(self, host: str, **faults: Any) -> None:
        (self.state / host / "faults.json").write_text(json.dumps(faults))


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    path = write_config(tmp_path / "cfg", readiness={"interval_s": 60, "repeat_hours": 4})
    state = tmp_path / "state"
    with running_platform(path, state) as platform, FakeSlackApi() as slack:
        config = load_config(path)  # after running_platform set the credentials it reads
        store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
        clock = Clock()
        service = RunService(store, config, clock=clock)
        presenter = Presenter(service, WebClient(token=DEFAULT_TOKEN, base_url=slack.api_url), post_interval_s=0)
        watch = ReadinessWatch(service, presenter, clock=clock)
        try:
            yield Watched(config, platform, state, slack, store, service, presenter, watch, clock)
        finally:
            watch.close()
            store.dispose()


def test_readiness_configuration(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path / "a")).readiness.interval_s == 900
    assert load_config(write_config(tmp_path / "a")).readiness_channel == CHANNEL
    with pytest.raises(ConfigError, match=r"readiness\.interval_s: must be 0 \(off\) or at least 5"):
        load_config(write_config(tmp_path / "b", readiness={"interval_s": 3}))
    with pytest.raises(ConfigError, match=r"readiness\.channel: readiness rounds need a channel"):
        load_config(write_config(tmp_path / "c", slack={"channels": []}))
    off = load_config(write_config(tmp_path / "d", slack={"channels": []}, readiness={"interval_s": 0}))
    assert off.readiness_channel is None
    own = load_config(write_config(tmp_path / "e", slack={"channels": []}, readiness={"channel": "C0READY"}))
    assert own.readiness_channel == "C0READY"


def test_each_change_is_announced_once_and_its_recovery_once(watched: Watched) -> None:
    w = watched
    assert w.round() == []  # a healthy platform: nothing to say
    with w.store.read_session() as s:
        stored = s.scalars(sa.select(ReadinessResult)).all()
    assert {(r.host, r.check) for r in stored} >= {("as-b", "service"), ("as-a", "role"), ("platform", "split-brain")}
    assert all(r.outcome == "pass" and r.at is not None for r in stored)

    # A stopped service: one message, what/where/since/what to do.
    w.set_service("as-b", "Stopped")
    w.clock.advance(minutes=1)
    [msg] = w.round()
    assert "1 new problem" in msg.text and "*as-b* service" in msg.text and f"{SERVICE}: Stopped" in msg.text
    assert (
        f"since {w.clock.now:%H:%M:%S} UTC — a failover to site-b (`/failover start site-a`) would fail at F0"
        in msg.text
    )
    assert "UTC UTC" not in msg.text
    w.clock.advance(minutes=1)
    assert w.round() == []  # unchanged: not announced again within repeat_hours
    w.clock.advance(hours=4)
    [again] = w.round()
    assert "still open" in again.text and "*as-b* service" in again.text
    w.set_service("as-b", "Running")
    w.clock.advance(minutes=1)
    [recovered] = w.round()
    assert "recovered" in recovered.text and "*as-b* service" in recovered.text and "new problem" not in recovered.text
    assert w.round() == []

    # An edited IsSlave: the Master turned into a Slave.
    w.set_is_slave("as-a", True)
    [drift] = w.round()
    assert "*as-a* role: answers as Slave, but the configuration (no run yet) left it Master" in drift.text
    w.set_is_slave("as-a", False)
    [back] = w.round()
    assert "recovered" in back.text and "*as-a* role" in back.text

    # A host refusing connections.
    w.faults("ms-b1", refuse=True)
    [down] = w.round()
    assert "*ms-b1* winrm" in down.text and "cannot connect" in down.text
    assert w.round() == []
    w.faults("ms-b1")
    [up] = w.round()
    assert "recovered" in up.text and "*ms-b1* winrm" in up.text
    assert w.watch.open_problems() == []


def test_several_problems_in_one_round_are_one_message(watched: Watched) -> None:
    w = watched
    w.set_service("ss-a1", "Stopped")
    w.faults("ms-b2", refuse=True)
    [msg] = w.round()
    assert "2 new problems" in msg.text and "*ss-a1* service" in msg.text and "*ms-b2* winrm" in msg.text


def test_two_running_masters_are_an_immediate_here_alert(watched: Watched) -> None:
    w = watched
    w.set_is_slave("as-b", False)  # as-b promoted by hand while as-a still runs as Master
    [alert] = w.round()
    assert alert.text.startswith("<!here>") and "Split brain" in alert.text
    assert "as-a, as-b" in alert.text and f"stop {SERVICE} on as-b now" in alert.text
    assert w.round() == []
    w.set_is_slave("as-b", True)
    [over] = w.round()
    assert "recovered" in over.text and "split-brain" in over.text


def test_an_active_run_hides_its_own_changes_but_not_a_split_brain(watched: Watched) -> None:
    w = watched
    run = w.service.open_run("failover", "site-a", [], "U0ALICE", CHANNEL)
    w.presenter.sync(run.id)  # the incident thread
    thread_ts = w.service.get_run(run.id).thread_ts
    assert thread_ts is not None
    w.set_service("as-b", "Stopped")  # what F1 does
    assert w.round() == []
    with w.store.read_session() as s:
        outcome = s.scalars(
            sa.select(ReadinessResult.outcome)
            .where(ReadinessResult.host == "as-b", ReadinessResult.check == "service")
            .order_by(ReadinessResult.id.desc())
        ).first()
    assert outcome == "expected"
    # F2/F3 done while as-a came back as a running Master: split brain, in the channel and in the thread.
    w.set_is_slave("as-b", False)
    w.set_service("as-b", "Running")
    [alert] = w.round()
    assert alert.text.startswith("<!here>") and f"stop {SERVICE} on as-a now" not in alert.text
    assert "as-a, as-b" in alert.text
    in_thread = [m for m in w.slack.thread(CHANNEL, thread_ts) if m.text.startswith("<!here>")]
    assert len(in_thread) == 1 and "Split brain" in in_thread[0].text


def test_roles_after_a_completed_failover(watched: Watched) -> None:
    w = watched
    run = w.service.open_run("failover", "site-a", [], "U0ALICE", CHANNEL)
    with w.store.session() as s:  # as a completed failover of site-a leaves the platform
        s.execute(
            sa.text("UPDATE runs SET state='completed', finished_at=CURRENT_TIMESTAMP WHERE id=:id"), {"id": run.id}
        )
        s.execute(sa.text("DELETE FROM active_runs"))
    w.set_is_slave("as-b", False)
    w.set_service("as-a", "Stopped")
    assert w.round() == []  # as-b is the Master the failover left; as-a may stay stopped
    w.set_service("as-a", "Running")  # site-a's old Master boots up before the failback
    [alert] = w.round()
    assert alert.text.startswith("<!here>") and f"stop {SERVICE} on as-a now" in alert.text
    assert f"as-b is the Master the last completed run {run.id} (failover of site-a) left" in alert.text


def test_rounds_never_overlap(watched: Watched) -> None:
    w = watched
    w.faults("as-a", latency_ms=600)
    import threading

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(w.watch.run_round())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r is None for r in results) == [False, True]


def test_due_from_stored_rounds(watched: Watched) -> None:
    w = watched
    w.watch.start()
    assert not w.watch.due()
    w.clock.advance(seconds=60)
    assert w.watch.due()
    w.watch.run_round()
    assert not w.watch.due()
    # Another process (a new leader) sees the same schedule from the stored rounds.
    other = ReadinessWatch(w.service, None, clock=w.clock)
    assert not other.due()
    w.clock.advance(seconds=60)
    assert other.due()
    other.close()


# ---------------------------------------------------------------------------- through `serve` and the command line


def _cli(h: Any, *args: str) -> Any:
    import subprocess
    import sys

    from tests.support.paths import ROOT

    return subprocess.run(
        [sys.executable, "-m", "bot", "readiness", *args],
        cwd=ROOT,
        env=h.replicas[0].env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readiness_command_and_cli_against_serve(tmp_path: Path) -> None:
    from tests.support.serve_process import served

    with served(tmp_path) as h:
        bob = h.people["U0BOB"]
        bob.command("readiness", channel=CHANNEL)
        [none] = h.slack.wait_for(lambda: h.slack.ephemerals("U0BOB"), what="an answer")
        assert "No readiness round has run yet" in none.text

        services = json.loads((h.state_dir / "as-b" / "services.json").read_text())
        services[SERVICE] = "Stopped"
        (h.state_dir / "as-b" / "services.json").write_text(json.dumps(services))
        done = _cli(h, "--now")
        assert done.returncode == 1, done.stderr
        assert "as-b" in done.stdout and f"{SERVICE}: Stopped" in done.stdout and "Open problems:" in done.stdout
        [msg] = h.slack.channel_messages(CHANNEL)
        assert "*as-b* service" in msg.text and "would fail at F0" in msg.text
        again = _cli(h, "--now", "--format", "json")
        assert again.returncode == 1
        data = json.loads(again.stdout)
        assert {"host": "as-b", "check": "service", "outcome": "fail", "detail": f"{SERVICE}: Stopped"} in data[
            "results"
        ]
        assert [p["host"] for p in data["open_problems"]] == ["as-b"]
        assert len(h.slack.channel_messages(CHANNEL)) == 1  # unchanged: not announced again

        bob.command("readiness", channel=CHANNEL)
        answers = h.slack.wait_for(lambda: h.slack.ephemerals("U0BOB")[1:], what="a second answer")
        text = "\n".join(a.text for a in answers)
        assert "as-b" in text and "FAIL" in text and f"{SERVICE}: Stopped" in text

        bob.command("help", channel=CHANNEL)
        helped = h.slack.wait_for(lambda: [e for e in h.slack.ephemerals("U0BOB") if "Usage" in e.text], what="help")
        assert "`readiness`" in helped[0].text


def _home_text(view: dict[str, Any]) -> str:
    from bot.blocks.render import render_blocks

    return render_blocks(view["blocks"])


def test_app_home_opened_publishes_a_home_tab(tmp_path: Path) -> None:
    from tests.support.serve_process import served

    people = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave"}
    with served(tmp_path, people=people) as h:
        assert _cli(h, "--now").returncode == 0
        dave = h.people["U0DAVE"]
        assert dave.open_home().status == 200
        view = h.slack.wait_for(lambda: h.slack.home_views.get("U0DAVE"), what="the home tab")
        text = _home_text(view)
        assert view["type"] == "home" and len(view["blocks"]) <= 100
        for expected in ("site-a", "site-b", "as-a", "as-b", "ss-a1", "ms-b2", "No run is active", "No runs yet"):
            assert expected in text, expected
        assert "as-a* — Master AccountServer" in text and "as-b* — Slave AccountServer" in text
        assert "ms-b1* — MirrorServer" in text and "all checks pass" in text
        assert [c for c in h.slack.calls("views.publish") if c.error] == []

        # A run waits on an approver: Bob (an approver) sees it waiting on him; Dave (not one) does not.
        for host in ("as-a", "ss-a1", "ss-a2"):
            h.faults(host, refuse=True)  # site-a is down
        fo = h.start("U0ALICE", "start site-a")
        h.settled(fo)
        h.people["U0BOB"].open_home()
        bobs = _home_text(h.slack.wait_for(lambda: h.slack.home_views.get("U0BOB"), what="Bob's home tab"))
        assert "Waiting on you" in bobs and f"{fo} step F1" in bobs
        assert "Current step: F1" in bobs and "Left: " in bobs and "no history yet" in bobs
        assert f"*{fo}* failover site-a → site-b — in progress" in bobs
        before = len(h.slack.calls("views.publish"))
        dave.open_home()
        h.slack.wait_for(lambda: len(h.slack.calls("views.publish")) > before, what="Dave's new home tab")
        assert "Waiting on you" not in _home_text(h.slack.home_views["U0DAVE"])

        # The status card at the top of the thread says how long is left, and so does /failover status.
        card = _home_text({"blocks": h.thread(fo)[0].blocks})
        assert "Left" in card and "need a person" in card and "no history yet" in card
        h.people["U0DAVE"].command("status", channel=CHANNEL)
        status = h.slack.wait_for(
            lambda: [e for e in h.slack.ephemerals("U0DAVE") if "Current step" in e.text], what="status"
        )
        assert "Left: " in status[0].text and "need a person" in status[0].text


def test_fake_slack_validates_views_publish_as_slack_does() -> None:
    with FakeSlackApi() as fake:
        client = WebClient(token=DEFAULT_TOKEN, base_url=fake.api_url)
        from slack_sdk.errors import SlackApiError

        good = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
        assert client.views_publish(user_id="U0ANY", view=good)["ok"]
        for bad in (
            {"type": "modal", "blocks": good["blocks"]},
            {"type": "home", "blocks": good["blocks"] * 101},
            {"type": "home", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]},
            {"type": "home", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]},
        ):
            with pytest.raises(SlackApiError) as err:
                client.views_publish(user_id="U0ANY", view=bad)
            assert err.value.response["error"] == "invalid_arguments"
        with pytest.raises(SlackApiError):
            client.views_publish(user_id="", view=good)


def test_how_long_is_left_comes_from_earlier_runs(watched: Watched) -> None:
    import time

    from bot.runs.estimate import Estimator
    from bot.store import audit

    w = watched
    estimator = Estimator(w.store)
    first = w.service.open_run("failover", "site-a", [], "U0ALICE", CHANNEL)
    left = estimator.left(w.service.view(first.id))
    assert left is not None and left.bot_seconds is None and "no history yet" in left.text()
    assert left.people_steps == sum(1 for sv in w.service.view(first.id).steps if sv.needed > 0) > 0
    audit.record(w.store, first.id, "bot", "execution.started", step_id="F1")
    time.sleep(1.0)
    audit.record(w.store, first.id, "bot", "execution.finished", step_id="F1")
    with w.store.session() as s:
        s.execute(
            sa.text("UPDATE runs SET state='completed', finished_at=CURRENT_TIMESTAMP WHERE id=:id"), {"id": first.id}
        )
        s.execute(sa.text("DELETE FROM active_runs"))
    second = w.service.open_run("failover", "site-a", [], "U0ALICE", CHANNEL)
    left = estimator.left(w.service.view(second.id))
    assert left is not None and left.history_runs == 1
    assert left.bot_seconds is not None and 0.9 <= left.bot_seconds < 5
    assert "about 1 s (from 1 earlier run)" in left.text()
    # A different scope has no history.
    with w.store.session() as s:
        s.execute(
            sa.text("UPDATE runs SET state='aborted', finished_at=CURRENT_TIMESTAMP WHERE id=:id"), {"id": second.id}
        )
        s.execute(sa.text("DELETE FROM active_runs"))
    third = w.service.open_run("failover", "site-a", ["scope=account"], "U0ALICE", CHANNEL)
    third_left = estimator.left(w.service.view(third.id))
    assert third_left is not None and third_left.bot_seconds is None


def test_two_replicas_run_one_readiness_loop_and_the_survivor_takes_over(tmp_path: Path) -> None:
    import os
    import time

    from tests.conftest import pg_url
    from tests.support.serve_process import postgres_schema, served

    url = pg_url() or ""
    try:
        schema = postgres_schema(url)
        db_url = schema.__enter__()
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at FAILOVER_TEST_PG_URL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")

    pids: dict[str, Any] = {}

    def replica_of(pid: str) -> str:
        """The serve process (replica) a round's runner belongs to: readiness runs in the worker process serve
        starts, so the runner's pid is that child's; its parent is the replica."""
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return "gone:" + pid  # the process has ended since (its replica was killed)
        parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        return parent if parent in pids else pid

    def rounds(h: Any) -> list[tuple[str, Any, Any]]:
        with h.store.read_session() as s:
            rows = s.execute(sa.text("SELECT runner, started_at, finished_at FROM readiness_rounds ORDER BY id")).all()
        return [(replica_of(r[0].rsplit(":", 1)[1]), r[1], r[2]) for r in rows]

    try:
        with served(tmp_path, replicas=2, db_url=db_url, config={"readiness": {"interval_s": 5}}) as h:
            pids.update({str(p.proc.pid): p for p in h.replicas if p.proc is not None})
            h.wait_until("three readiness rounds", lambda: len([r for r in rounds(h) if r[2]]) >= 3, timeout=60)
            seen = [r for r in rounds(h) if r[2]]
            assert len({pid for pid, _, _ in seen}) == 1, seen  # one loop: every round by the same replica
            for (_, start_a, end_a), (_, start_b, _) in zip(seen, seen[1:], strict=False):
                assert end_a <= start_b, "rounds overlapped"
                assert (start_b - start_a).total_seconds() >= 4.5, "a round came before the interval"
            leader = pids[seen[0][0]]
            survivor = next(p for p in h.replicas if p is not leader)
            leader.kill()
            killed_at = time.monotonic()
            h.wait_until(
                "a round by the surviving replica",
                lambda: any(pid == str(survivor.proc.pid) and end for pid, _, end in rounds(h)),  # type: ignore[union-attr]
                timeout=60,
            )
            assert time.monotonic() - killed_at < 45
            after = [r for r in rounds(h) if r[0] == str(survivor.proc.pid)]  # type: ignore[union-attr]
            assert after and all(r[0] != seen[0][0] for r in after)
            assert h.slack.channel_messages(CHANNEL) == []  # a healthy platform: nothing announced
    finally:
        schema.__exit__(None, None, None)


def test_old_rounds_are_forgotten(watched: Watched) -> None:
    w = watched
    first = w.watch.run_round()
    assert first is not None
    w.clock.advance(days=15)
    second = w.watch.run_round()
    assert second is not None
    with w.store.read_session() as s:
        rounds = s.scalars(sa.text("SELECT id FROM readiness_rounds")).all()
        kept = set(s.scalars(sa.select(ReadinessResult.round_id)).all())
    assert list(rounds) == [second.id] and kept == {second.id}


def test_a_host_answering_as_another_server_is_drift(watched: Watched) -> None:
    w = watched
    assert w.round() == []  # the first round notes every host's ServerGuid
    path = w.state / "ms-b1" / "C" / "ProgramData" / "Attix5 Pro" / "SS_Service" / "Settings.xml"
    original = path.read_bytes()
    guid = settings_xml.read_server_guid(original)
    other = "0badc0de-0000-4000-8000-00000000beef"
    path.write_bytes(original.replace(guid.encode(), other.encode()))  # something else answers at ms-b1's address
    [drift] = w.round()
    assert "*ms-b1* identity: answers with ServerGuid ********-****-****-****-00000000beef" in drift.text
    assert settings_xml.mask_guid(guid) in drift.text and guid not in drift.text
    assert w.round() == []
    path.write_bytes(original)
    [back] = w.round()
    assert "recovered" in back.text and "*ms-b1* identity" in back.text


def test_home_says_a_step_waits_on_you_only_if_you_may_and_have_not_approved(tmp_path: Path) -> None:
    from bot.listeners.home import waiting_on_you
    from tests.support.engine import ALICE, BOB, CAROL, drive, engine, seen

    with engine(tmp_path) as eng:
        for host in ("as-a", "ss-a1", "ss-a2"):
            eng.faults(host, refuse=True)
        drive(eng, eng.service.open_run("failover", "site-a", [], ALICE).id)
        for host in ("as-a", "ss-a1", "ss-a2"):
            eng.faults(host)
        fb = eng.service.open_run("failback", "site-a", [], ALICE).id
        drive(eng, fb, stop_at="B11")
        settings = eng.config.slack

        def waits_on(user: str) -> bool:
            return waiting_on_you(settings, eng.service.view(fb), user, None)

        assert eng.service.view(fb).current.step.id == "B11"  # type: ignore[union-attr]  # a delete: 2 approvers
        assert waits_on(BOB) and waits_on(CAROL)
        assert not waits_on(ALICE)  # she started the run: not one of a delete's approvers
        assert not waits_on("U0DAVE")  # not an approver
        eng.service.approve(fb, "B11", BOB, **seen(eng.service, fb, "B11"))  # type: ignore[arg-type]
        assert not waits_on(BOB) and waits_on(CAROL)  # Bob already approved: 1 of 2
