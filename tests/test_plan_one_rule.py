"""One implementation of each rule the plan shows (issue 13): the approvals a step needs, and a failback's default
scope. The plan text, the Slack plan card and the run service agree on every step of both runbooks under any
approval settings; ``failover-bot plan failback`` and the run service agree on the defaults for any history."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import cli
from bot.blocks.cards import plan_summary
from bot.config import Config, SlackSettings, load_config
from bot.errors import UsageError
from bot.render.plan import format_plan, format_plan_short
from bot.runs import policy
from bot.runs.runbook import Plan, parse_options, resolve
from bot.runs.service import RunService
from bot.store.db import Store
from bot.store.models import Run
from tests.support.paths import EXAMPLE_CONFIG, ROOT

CONFIG = load_config(EXAMPLE_CONFIG)
VARIANTS = [
    ("failover", ["scope=all"]),
    ("failover", ["scope=account"]),
    ("failover", ["scope=storage"]),
    ("failback", ["scope=all"]),
    ("failback", ["scope=account"]),
    ("failback", ["scope=storage"]),
    ("failback", ["scope=all", "rebuilt"]),
    ("failback", ["scope=account", "rebuilt"]),
    ("failback", ["scope=storage", "rebuilt"]),
]
PLANS: list[Plan] = [resolve(CONFIG, d, "site-a", parse_options(d, args)) for d, args in VARIANTS]  # type: ignore[arg-type]


def _with(slack: SlackSettings) -> Config:
    return dataclasses.replace(CONFIG, model=CONFIG.model.model_copy(update={"slack": slack}))


def _needed_in_plan_text(text: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^ ?\d+\. (\S+) .*  approvals: (\d+)  KB ", text, re.M)}


def _needed_from_words(who: str) -> int:
    """What a 'who acts' column says, as a number of approvals (``--short`` and the Slack plan card)."""
    if who in ("bot (read-only)", "the bot"):
        return 0
    many = re.match(r"(\d+) approvers", who)
    return int(many[1]) if many else 1


slack_settings = st.builds(
    lambda n, initiator: SlackSettings(
        destructive_approvals=n,
        initiator_may_approve_destructive=initiator,
        allow_weaker_delete_approval=n < 2 or initiator,
    ),
    st.integers(1, 5),
    st.booleans(),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('one-rule') / 'bot.db'}")
    yield s  # type: ignore[misc]
    s.dispose()


@settings(max_examples=20)
@given(slack_settings)
def test_plan_text_card_and_service_agree_on_the_approvals_of_every_step(store: Store, slack: SlackSettings) -> None:
    config = _with(slack)
    service = RunService(store, config)
    for plan in PLANS:
        text = _needed_in_plan_text(format_plan(plan, config))
        short = {line.split()[0]: line for line in format_plan_short(plan, config).splitlines()[1:]}
        card = {}
        for line in plan_summary(plan, config, "").splitlines()[1:-1]:
            parts = line.removesuffix(" · optional").split(" · ")
            card[parts[0].split("`")[1]] = parts[-1]
        assert set(text) == set(short) == set(card) == set(plan.ids), plan.direction
        for step in plan.steps:
            needed = service.needed(step)  # what the step's card shows (StepView.needed) and the votes count
            assert needed == policy.approvals_needed(step.kind, step.risk, slack, step.action)
            assert needed == step.approvals_needed(slack.destructive_approvals)
            assert text[step.id] == needed, (step.id, plan.options)
            assert _needed_from_words(card[step.id]) == needed, (step.id, card[step.id])
            who = re.split(r"\s{2,}", short[step.id])[3]
            assert _needed_from_words(who) == needed, (step.id, who)
            if step.is_destructive:
                assert needed == slack.destructive_approvals
            elif step.risk == "read" and step.kind in ("host", "sql"):
                assert needed == 0


# ------------------------------------------------------------------------------ failback defaults

SCOPES = st.sampled_from([("all", ""), ("account", ""), ("storage", ""), ("all", "ss-a1"), ("storage", "ss-a2")])
HISTORY = st.lists(st.tuples(st.sampled_from(["completed", "aborted"]), SCOPES), max_size=4)
ARGS = st.sampled_from(
    [[], ["rebuilt"], ["scope=account"], ["storage=ss-a1"], ["SCOPE=storage"], ["rebuilt", "scope=all"]]
)


def _record(store: Store, history: list[tuple[str, tuple[str, str]]]) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with store.session() as s:
        s.execute(sa.delete(Run))
        for n, (state, (scope, storage)) in enumerate(history, 1):
            at = start + timedelta(hours=n)
            s.add(
                Run(id=f"FO-{n}", number=n, platform=CONFIG.platform, direction="failover", site="site-a",
                    partner="site-b", scope=scope, storage=storage, rebuilt=False, state=state, initiator="U0ALICE",
                    created_at=at, finished_at=at + timedelta(minutes=30))
            )  # fmt: skip


@settings(max_examples=25)
@given(HISTORY, ARGS)
def test_plan_on_the_command_line_and_the_service_give_the_same_failback_defaults(
    store: Store, monkeypatch: pytest.MonkeyPatch, history: list[tuple[str, tuple[str, str]]], args: list[str]
) -> None:
    _record(store, history)
    monkeypatch.setenv("FAILOVER_DB_URL", str(store.url))
    options, source = RunService(store, CONFIG).explain_options("failback", "site-a", args)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["plan", "failback", "site-a", *args, "--config", str(EXAMPLE_CONFIG)])
    try:
        plan = resolve(CONFIG, "failback", "site-a", options)
    except UsageError as exc:
        assert code == 2 and str(exc) in err.getvalue()
        return
    assert code == 0, err.getvalue()
    assert out.getvalue() == format_plan(dataclasses.replace(plan, options_source=source), CONFIG) + "\n"


# ------------------------------------------------------------------------------ written once


def _product_sources() -> dict[str, ast.Module]:
    return {
        str(p.relative_to(ROOT)): ast.parse(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "bot").rglob("*.py"))
    }


def test_the_approvals_rule_and_the_failback_default_are_written_once() -> None:
    """Only policy.needed_approvals returns the destructive-approval count; only runbook/options.py decides
    whether a command chose its own scope and words where a failback's scope came from."""
    returns_count: list[str] = []
    scope_given: list[str] = []
    last_failover: list[str] = []
    for path, tree in _product_sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None):
                    value = ret.value
                    name = value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", "")
                    if name == "destructive_approvals":
                        returns_count.append(f"{path}:{node.name}")
            if isinstance(node, ast.Tuple) and [getattr(e, "value", None) for e in node.elts] == ["scope=", "storage="]:
                scope_given.append(path)
            if isinstance(node, ast.Constant) and "the last completed failover of" in str(node.value):
                last_failover.append(path)
    assert returns_count == ["bot/runs/policy.py:needed_approvals"]
    assert sorted(set(scope_given)) == ["bot/runs/runbook/options.py"]
    assert sorted(set(last_failover)) == ["bot/runs/runbook/options.py"]


def test_the_plan_text_lives_with_the_renderers() -> None:
    assert not (Path(ROOT) / "bot/runs/runbook.py").exists()
    for path, tree in _product_sources().items():
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        if path.startswith("bot/runs/"):
            assert not defined & {"format_plan", "format_plan_short", "mask_guids"}, path


def test_the_plan_a_command_asks_for_is_made_in_one_place() -> None:
    """`failover-bot plan`, `/failover plan` and opening a run all call runbook.plan_for_command: only it joins
    the options, a failback's defaults and where they came from into a plan."""
    joins = [
        path
        for path, tree in _product_sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "options_source"
    ]
    assert sorted(set(joins)) == ["bot/runs/runbook/resolution.py"]
