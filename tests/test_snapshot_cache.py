"""The snapshot cache (RunService.view) never serves a stale run: two services on two Stores of one database,
and writes by hand beside them, interleaved by Hypothesis; every view equals one built fresh from the rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import load_config
from bot.errors import StateConflict
from bot.runs.service import RunService, RunView
from bot.store.db import Store, utcnow
from bot.store.models import Approval
from tests.support.platform import write_config

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
OPS = (
    "view",
    "fact",
    "message_ts",
    "claim_message",
    "release_claim",
    "thread",
    "post",
    "approve",
    "by_hand_step",
    "by_hand_vote",
    "by_hand_unvote",
    "by_hand_run",
)


def digest(view: RunView) -> tuple[Any, ...]:
    run = view.run
    steps = tuple(
        (
            sv.step.id,
            sv.state,
            sv.row.attempt,
            sv.row.error,
            sv.row.message_ts,
            sv.row.fingerprint,
            tuple((k, r.state) for k, r in sv.targets.items()),
            tuple(sv.approvers),
            tuple(sv.mark_done_votes),
            tuple(sv.skip_votes),
        )
        for sv in view.steps
    )
    return (run.id, run.state, run.facts, run.channel, run.thread_ts, run.abort_reason, steps)


def _apply(op: str, service: RunService, run_id: str, n: int) -> None:
    view = service.view(run_id)
    cur = view.current
    step_id = cur.step.id if cur is not None else view.steps[0].step.id
    store = service.store
    try:
        if op == "view":
            return
        if op == "fact":
            service.record_fact(run_id, f"k{n % 3}", n)
        elif op == "message_ts":
            service.set_message_ts(run_id, step_id, f"17000000{n}.0001")
        elif op == "claim_message":
            service.claim_message(run_id, step_id)
        elif op == "release_claim":
            service.release_message_claim(run_id, step_id)
        elif op == "thread":
            service.set_thread(run_id, "C0INCIDENT", f"1700000{n}.0002")
        elif op == "post":
            service.post(run_id, step_id, fingerprint=f"fp{n}", preview=f"preview {n}")
        elif op == "approve" and cur is not None:
            row = cur.row
            who = (BOB, CAROL)[n % 2]
            service.approve(run_id, step_id, who, round=row.attempt, fingerprint=row.fingerprint or "")
        elif op == "by_hand_step":  # a person fixing a row by hand, beside the bot
            with store.session() as s:
                s.execute(
                    sa.text("UPDATE step_runs SET error = :e WHERE run_id = :r AND step_id = :s"),
                    {"e": f"by hand {n}", "r": run_id, "s": step_id},
                )
        elif op == "by_hand_vote":
            with store.session() as s:
                attempt = s.scalar(
                    sa.text("SELECT attempt FROM step_runs WHERE run_id = :r AND step_id = :s AND target = ''"),
                    {"r": run_id, "s": step_id},
                )
                voted = s.scalar(
                    sa.select(sa.func.count())
                    .select_from(Approval)
                    .where(Approval.run_id == run_id, Approval.step_id == step_id, Approval.user_id == f"U0HAND{n}")
                    .where(Approval.kind == "approve", Approval.round == attempt)
                )
                if not voted:
                    s.execute(
                        sa.insert(Approval).values(
                            run_id=run_id,
                            step_id=step_id,
                            kind="approve",
                            user_id=f"U0HAND{n}",
                            fingerprint="",
                            round=attempt,
                            created_at=utcnow(),
                        )
                    )
        elif op == "by_hand_unvote":
            with store.session() as s:
                s.execute(sa.text("DELETE FROM approvals WHERE run_id = :r"), {"r": run_id})
        elif op == "by_hand_run":
            with store.session() as s:
                s.execute(sa.text("UPDATE runs SET abort_reason = :a WHERE id = :r"), {"a": f"note {n}", "r": run_id})
    except StateConflict:
        pass  # not allowed in the step's state: nothing changed, which the views must show too


def test_views_from_two_stores_are_never_stale(tmp_path: Path, store: Store) -> None:
    config = load_config(write_config(tmp_path / "cfg"))
    other = Store(store.url)  # a second process or replica: its own engine and connections
    services = [RunService(store, config), RunService(other, config)]
    opened = [0]

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1), st.integers(0, 9)), min_size=1, max_size=30))
    def interleaved(ops: list[tuple[str, int, int]]) -> None:
        with store.session() as s:
            s.execute(sa.text("DELETE FROM active_runs"))
        opened[0] += 1
        run_id = services[opened[0] % 2].open_run("failover", "site-a", [], ALICE, "C0INCIDENT").id
        for op, who, n in ops:
            _apply(op, services[who], run_id, n)
            fresh = digest(RunService(store, config).view(run_id))  # no cache: built from the rows
            for service in services:
                assert digest(service.view(run_id)) == fresh, (op, who, n)

    try:
        interleaved()
    finally:
        other.dispose()


def test_a_view_is_built_once_per_change(tmp_path: Path, store: Store) -> None:
    config = load_config(write_config(tmp_path / "cfg"))
    service = RunService(store, config)
    run_id = service.open_run("failover", "site-a", [], ALICE, "C0INCIDENT").id
    first = service.view(run_id)
    assert service.view(run_id) is first and service.view_builds == 1  # unchanged: the same snapshot
    service.record_fact(run_id, "k", 1)
    second = service.view(run_id)
    assert second is not first and service.view_builds == 2
    with store.session() as s:  # a change by hand, beside the bot: the database bumps the version too
        s.execute(sa.text("UPDATE step_runs SET error = 'x' WHERE run_id = :r"), {"r": run_id})
    assert service.view(run_id).steps[0].row.error == "x" and service.view_builds == 3


def test_a_fan_out_target_costs_two_write_transactions(tmp_path: Path, store: Store) -> None:
    """Claim (with its approval and intent) before the remote call, then result and facts: two commits."""
    config = load_config(write_config(tmp_path / "cfg"))
    service = RunService(store, config)
    run_id = service.open_run("failback", "site-a", [], ALICE, "C0INCIDENT").id
    fan = next(sv for sv in service.view(run_id).steps if sv.targets)
    with store.session() as s:  # the steps before it are done
        before = [sv.step.id for sv in service.view(run_id).steps[: service.view(run_id).steps.index(fan)]]
        s.execute(
            sa.text("UPDATE step_runs SET state = 'skipped' WHERE run_id = :r AND step_id = :s"),
            [{"r": run_id, "s": step_id} for step_id in before],
        )
    keys = list(fan.targets)
    service.post(run_id, fan.step.id, fingerprint="fp", preview="p", targets=keys)
    with store.session() as s:
        s.execute(
            sa.text("UPDATE step_runs SET state = 'approved' WHERE run_id = :r AND step_id = :s AND target = ''"),
            {"r": run_id, "s": fan.step.id},
        )
    assert service.claim(run_id, fan.step.id, keys)
    commits: list[int] = []

    def count(_conn: Any) -> None:
        commits.append(1)

    sa.event.listen(store.engine, "commit", count)
    try:
        assert service.claim_target(run_id, fan.step.id, keys[0], intent={"action": "x"}, approve=True)
        service.finish(run_id, fan.step.id, ok=True, target=keys[0], result={"summary": "ok"}, facts={"seen": 1})
    finally:
        sa.event.remove(store.engine, "commit", count)
    assert len(commits) == 2
    view = service.view(run_id)
    assert view.step(fan.step.id).targets[keys[0]].state == "succeeded"
    assert '"seen": 1' in view.run.facts
