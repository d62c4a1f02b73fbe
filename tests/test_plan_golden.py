"""`plan start|failback` on the example platform, for every scope and `rebuilt`, against golden files.

The golden files under tests/golden/ were read line by line against the KB article; a change to a runbook
or to the plan text shows here as a diff to read again. Regenerate with FAILOVER_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from bot.config import load_config
from bot.render.plan import format_plan
from bot.runs.runbook import parse_options, resolve
from tests.support.paths import EXAMPLE_CONFIG

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "start-all": ("failover", ["scope=all"]),
    "start-account": ("failover", ["scope=account"]),
    "start-storage": ("failover", ["scope=storage"]),
    "failback-all": ("failback", ["scope=all"]),
    "failback-account": ("failback", ["scope=account"]),
    "failback-storage": ("failback", ["scope=storage"]),
    "failback-rebuilt": ("failback", ["scope=all", "rebuilt"]),
    "failback-rebuilt-account": ("failback", ["scope=account", "rebuilt"]),
    "failback-rebuilt-storage": ("failback", ["scope=storage", "rebuilt"]),
}


def plan_text(direction: str, args: list[str]) -> str:
    config = load_config(EXAMPLE_CONFIG)
    plan = resolve(config, direction, "site-a", parse_options(direction, args))  # type: ignore[arg-type]
    source = "scope and StorageServers: as given in the command" if direction == "failback" else ""
    return format_plan(dataclasses.replace(plan, options_source=source), config)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_matches_its_golden_file(name: str) -> None:
    direction, args = CASES[name]
    text = plan_text(direction, args)
    path = GOLDEN / f"plan-{name}.txt"
    if os.environ.get("FAILOVER_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"plan {name} differs from {path}"
