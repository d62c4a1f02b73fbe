"""Traceability both ways between the packaged runbooks and the vendor article they implement."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pytest

from bot.runs.runbook import StepSpec, load_runbook
from tests.support.paths import KB_FILE

KB: dict[int, str] = dict(enumerate(KB_FILE.read_text(encoding="utf-8").splitlines(), 1))

FAILOVER_SECTION = range(7, 20)  # "Failover" heading .. the prose on how backups resume
FAILBACK_SECTION = range(20, 71)  # "Failback" heading .. the optional integrity check
_STEP_LINE = re.compile(r"^(- |\d+\. )")  # a bullet or a numbered instruction

# Instruction lines that are neither bullets nor numbered, each with why it belongs to an instruction.
SUPPORTING: dict[int, str] = {
    2: "overview prose deciding which parts to fail over (AccountServer and/or StorageServers): F0 and the scope",
    12: "the XML value line 11 tells you to set",
    19: "prose: what Agents do once backups resume (F8)",
    24: "prose: the procedure for an irrecoverable primary site (R1-R3)",
    28: "the XML line that line 27 tells you to add",
    29: "note: the ServerGUID to write down",
    30: "the XML example of the ServerGUID of line 29",
    31: "save and close the file edited since line 27",
    42: "warning belonging to the Delete of line 41",
    50: "the XML value line 49 tells you to set",
    54: "the XML line that line 53 tells you to add",
    57: "prose instruction: block backups by ticking Group Is Disabled on every Group",
    61: "warning belonging to the Delete of line 60",
    70: "prose: the optional integrity check (Article 1103)",
}
# Lines a runbook may cite from the other direction's section, with the reason.
CROSS_REFERENCES: dict[str, dict[int, str]] = {
    "failover": {52: "F8 records whether Agents' DNS was redirected, which failback line 52 reverts"},
    "failback": {},
}
# KB lines that carry more than one step: the exact words of each instruction they hold.
FRAGMENTS: dict[int, tuple[str, ...]] = {
    24: (
        "a new Slave AccountServer should be installed",
        "added to the promoted Slave",
        "new StorageServers should be installed and added to the Storage Platform as MirrorServers for the "
        "promoted MirrorServers",
        "mirroring should be allowed to complete",
        "A failback to the new primary site can then be initiated.",
    ),
    33: (
        "edit the entry: change its IP to that of the demoted Master AccountServer, and set OnLine as True.",
        "the latter needs to be added to the database anew",
        "add the Master AccountServer to the Storage Platform as a Slave AccountServer",
        "The first eight characters of the ServerGUID form the one-time password.",
    ),
    34: (
        "Close the BackupServer table and restart the AccountServer service.",
        "Reconnect the Console to the promoted Slave AccountServer.",
        "The demoted Master AccountServer should now be present as a Slave.",
    ),
    49: (
        "On the demoted Master AccountServer, stop the AccountServer service",
        "navigate to the AS_Service folder and open the Settings.xml file",
        "value to False",
    ),
    55: (
        "With both the Master and Slave AccountServer operational",
        "trigger a database backup from the Master",
    ),
    63: (
        "right-click the name of the demoted MirrorServer.",
        "Point to Advanced and click Change StorageServer address.",
        "Enter the IP address or host name and port of the original StorageServer.",
        "When complete, restart the StorageServer service.",
    ),
}
# Steps the article does not contain, flagged in the YAML by `origin`; they may sit out of KB order.
NOT_FROM_KB = {"F0": "added", "R0": "added", "R1b": "added", "B22": "resolves"}

EXPECTED_IDS = {
    "failover": [f"F{i}" for i in range(9)],
    "failback": ["R0", "R1", "R1b", "R1c", "R2", "R3", "B1", "B2", "B3", "B4", "B4b"] + [f"B{i}" for i in range(5, 38)],
}


def instruction_lines(direction: str) -> set[int]:
    section = FAILOVER_SECTION if direction == "failover" else FAILBACK_SECTION
    numbered = {n for n in section if _STEP_LINE.match(KB[n])}
    supporting = {n for n in SUPPORTING if n in section or (direction == "failover" and n == 2)}
    return numbered | supporting


def uncovered(steps: Iterable[StepSpec], lines: Iterable[int]) -> set[tuple[int, str]]:
    """Instruction units (a line, or a fragment of a line that holds several steps) no step cites."""
    units = {(n, f) for n in lines for f in FRAGMENTS.get(n, ("",))}
    covered: set[tuple[int, str]] = set()
    for step in steps:
        for n in step.source:
            covered |= {(n, q) for q in step.quote if q in FRAGMENTS.get(n, ())}
            if n not in FRAGMENTS:
                covered.add((n, ""))
    return units - covered


def _runbooks() -> dict[str, tuple[StepSpec, ...]]:
    return {d: load_runbook(d) for d in ("failover", "failback")}  # type: ignore[arg-type]


def _sequences(direction: str, steps: Sequence[StepSpec]) -> list[list[StepSpec]]:
    """The step orders a run can execute: failback's normal and rebuilt variants separately."""
    if direction == "failover":
        return [list(steps)]
    return [[s for s in steps if s.variant in (v, "any")] for v in ("normal", "rebuilt")]


def test_instruction_lines_are_read_from_the_article() -> None:
    assert KB[7] == "Failover" and KB[20] == "Failback" and KB[71] == "Comments"
    failover = instruction_lines("failover")
    failback = instruction_lines("failback")
    assert failover == {2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
    assert {22, 23, 26, 27, 32, 33, 34, 36, 44, 45, 56, 58, 68} <= failback
    # headings and overview lines are never instruction lines
    assert not ({1, 3, 4, 5, 6, 7, 8, 9, 20, 21, 25, 35, 69, 71, 72, 73, 74} & (failover | failback))
    for n in SUPPORTING:
        assert not _STEP_LINE.match(KB[n]), f"line {n} is already a bullet or numbered line"
    for n, fragments in FRAGMENTS.items():
        for fragment in fragments:
            assert fragment in KB[n], f"line {n} does not contain {fragment!r}"


@pytest.mark.parametrize("direction", ["failover", "failback"])
def test_every_instruction_line_is_cited(direction: str) -> None:
    steps = _runbooks()[direction]
    assert uncovered(steps, instruction_lines(direction)) == set()


@pytest.mark.parametrize("direction", ["failover", "failback"])
def test_every_cited_line_is_an_instruction_line(direction: str) -> None:
    allowed = instruction_lines(direction) | set(CROSS_REFERENCES[direction])
    for step in _runbooks()[direction]:
        stray = [n for n in step.source if n not in allowed]
        assert not stray, f"{step.id} cites {stray}: {[KB.get(n) for n in stray]}"


@pytest.mark.parametrize("direction", ["failover", "failback"])
def test_quotes_are_the_articles_words(direction: str) -> None:
    steps = _runbooks()[direction]
    citing: dict[int, list[str]] = {}
    for step in steps:
        for n in step.source:
            citing.setdefault(n, []).append(step.id)
        for q in step.quote:
            assert any(q in KB[n] for n in step.source), f"{step.id}: {q!r} is not in its cited lines"
            assert any(q in FRAGMENTS.get(n, ()) for n in step.source), f"{step.id}: {q!r} is not a listed fragment"
        for n in step.source:
            if n in FRAGMENTS:
                assert set(step.quote) & set(FRAGMENTS[n]), f"{step.id} cites split line {n} without quoting its part"
    shared = {n: ids for n, ids in citing.items() if len(ids) > 1}
    assert set(shared) <= set(FRAGMENTS), f"lines cited by several steps need FRAGMENTS: {shared}"


@pytest.mark.parametrize("direction", ["failover", "failback"])
def test_steps_follow_the_articles_order(direction: str) -> None:
    steps = _runbooks()[direction]
    flagged = {s.id: s.origin for s in steps if s.origin != "kb"}
    assert flagged == {k: v for k, v in NOT_FROM_KB.items() if k[0] in {s.id[0] for s in steps}}
    for sequence in _sequences(direction, steps):
        from_kb = [s for s in sequence if s.id not in NOT_FROM_KB]
        for before, after in zip(from_kb, from_kb[1:], strict=False):
            assert min(after.source) >= min(before.source), f"{after.id} comes before {before.id} in the KB"
            assert max(after.source) >= max(before.source), (before.id, after.id)


@pytest.mark.parametrize("direction", ["failover", "failback"])
def test_step_ids_are_exactly_the_products(direction: str) -> None:
    assert [s.id for s in _runbooks()[direction]] == EXPECTED_IDS[direction]


_ALL_STEPS = [(d, s.id) for d, steps in _runbooks().items() for s in steps]


@pytest.mark.parametrize(("direction", "step_id"), _ALL_STEPS, ids=[i for _, i in _ALL_STEPS])
def test_removing_any_step_breaks_coverage(direction: str, step_id: str) -> None:
    steps = _runbooks()[direction]
    if NOT_FROM_KB.get(step_id) == "added" and step_id != "F0":
        # the bot's own safety steps around a KB step (they cite the line they guard, which its step also cites)
        assert next(s for s in steps if s.id == step_id).source
        return
    remaining = [s for s in steps if s.id != step_id]
    assert len(remaining) == len(steps) - 1
    assert uncovered(remaining, instruction_lines(direction)), f"{step_id} cites nothing no other step cites"
