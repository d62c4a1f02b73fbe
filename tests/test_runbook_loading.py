"""Loading a malformed runbook: every problem is a RunbookError that names the file, the step, the key path and
the offending value — never a raw pydantic, KeyError or TypeError traceback (issue 13: pydantic loading)."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bot.runs.runbook import RunbookError, load_runbook, parse_runbook
from bot.runs.runbook.loading import StepYaml, validate_steps

RAW: dict[str, list[dict[str, Any]]] = {
    d: yaml.safe_load(resources.files("bot.runs.runbooks").joinpath(f"{d}.yml").read_text(encoding="utf-8"))
    for d in ("failover", "failback")
}
FIELDS = sorted(StepYaml.model_fields)
NESTED_KEYS = ["delete", "keep", "each", "scope", "role", "name", "at", "shown_as", "step", "outcome", "fact"]
NESTED_KEYS += ["equals", "not_equals", "service", "value", "colour"]
WORDS = ["all", "account", "storage", "pair", "host", "manual", "check", "destructive", "change", "read", "ss"]
WORDS += ["person", "as_p", "service.stop", "preflight", "F0", "B4", "X1", "{as_s.name}", "{ss.name}", "{bogus}"]
WORDS += ["{", "}", "account_server", "true", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NESTED_KEYS), inner, max_size=4),
    max_leaves=10,
)
steps = st.sampled_from([(d, i) for d in RAW for i in range(len(RAW[d]))])


def _check(raw: list[dict[str, Any]], direction: str, step: int, key: str, value: object, removed: bool) -> None:
    """Valid, or a RunbookError at this step that names ``key`` and quotes what was wrong."""
    try:
        validate_steps(raw, direction, f"{direction}.yml")  # type: ignore[arg-type]
    except RunbookError as exc:
        message = str(exc)
        sid = raw[step].get("id")
        shown = sid if isinstance(sid, str) and sid.isprintable() and 0 < len(sid) <= 20 else f"#{step + 1}"
        assert message.startswith(f"{direction}.yml: step {shown}: "), message
        assert "\n" not in message and len(message) < 700, message
        assert key in message, (key, message)
        if not removed:
            quoted = (
                str(value).lower(),
                repr(value).lower()[:40],
                "got ",
                "is not one of",
                "placeholder",
                "braces",
                "missing required",
                "unknown key",
            )
            assert any(q in message.lower() for q in quoted), (value, message)


@given(steps, st.sampled_from(FIELDS), junk)
def test_a_step_with_one_key_replaced_loads_or_says_which_key_and_value(
    where: tuple[str, int], key: str, value: object
) -> None:
    direction, i = where
    raw = copy.deepcopy(RAW[direction][: i + 1])
    raw[i][key] = value
    _check(raw, direction, i, key, value, removed=False)


@given(steps, st.sampled_from(FIELDS))
def test_a_step_with_one_key_removed_loads_or_says_which_key(where: tuple[str, int], key: str) -> None:
    direction, i = where
    raw = copy.deepcopy(RAW[direction][: i + 1])
    raw[i].pop(key, None)
    _check(raw, direction, i, key, None, removed=True)


@given(steps, st.sampled_from(["delete", "keep", "each", "scope"]), junk)
def test_a_deletion_with_one_key_replaced_loads_or_says_where(where: tuple[str, int], key: str, value: object) -> None:
    direction, i = where
    raw = copy.deepcopy(RAW[direction][: i + 1])
    if not raw[i].get("deletes"):
        raw[i]["risk"] = "destructive"
        raw[i]["deletes"] = [
            {"delete": {"role": "r", "name": "n", "at": "a"}, "keep": [{"role": "r", "name": "k", "at": "b"}]}
        ]
    raw[i]["deletes"][0][key] = value
    _check(raw, direction, i, "deletes", value, removed=False)


@given(st.dictionaries(st.sampled_from(FIELDS + NESTED_KEYS) | st.text(max_size=6), junk, max_size=12))
def test_any_mapping_loads_or_is_a_runbook_error(entry: dict[str, Any]) -> None:
    try:
        validate_steps([entry], "failback", "x.yml")
    except RunbookError as exc:
        assert str(exc).startswith("x.yml: step "), str(exc)
        assert "\n" not in str(exc)


@given(junk)
def test_any_document_loads_or_is_a_runbook_error(document: object) -> None:
    try:
        validate_steps(document, "failover", "x.yml")
    except RunbookError as exc:
        assert str(exc).startswith("x.yml"), str(exc)


_VALID = {
    "id": "X1",
    "title": "Stop it",
    "kind": "host",
    "risk": "change",
    "target": "as_s",
    "action": "service.stop",
    "params": {"service": "account_server"},
    "scopes": ["account"],
    "instructions": "Stop {as_service} on {as_s.name}.",
    "source": [10],
}
_OBJECT = {"role": "mirror registration", "name": "n", "at": "a"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fanout": "yes"}, "step X1: fanout: must be true or false (got 'yes')"),
        ({"params": [1]}, "step X1: params: must be a mapping (got [1])"),
        (
            {"params": {"service": "x"}},
            "action service.stop needs params.service: account_server or storage_server (got params.service: 'x')",
        ),  # fmt: skip
        (
            {"scopes": ["all", "account"]},
            "scopes: must be [all] or a list of account / storage, without repeats (got ['all', 'account'])",
        ),  # fmt: skip
        ({"scopes": [{"a": 1}]}, "scopes[0] {'a': 1} is not one of all, account, storage"),
        ({"source": [3, 2]}, "source: must list KB lines once each, ascending (got [3, 2])"),
        ({"source": "10"}, "source: must be a list (got '10')"),
        ({"source": [0]}, "source[0]: Input should be greater than 0 (got 0)"),
        (
            {"when": {"x": 1}},
            "when must be {step, outcome}, {fact}, {fact, equals} or {fact, not_equals} (got keys: x)",
        ),
        ({"otp": "zz"}, "otp 'zz' is not one of as_p, ss, ms"),
        ({"choices": ["a"]}, "choices: must list at least 2 item(s) (got ['a'])"),
        ({"title": "  "}, "title: must be a non-empty string (got '  ')"),
        ({"title": None}, "missing required key(s) title"),
        ({"title": {"a": 1}}, "title: must be a string (got {'a': 1})"),
        ({"quote": [1]}, "quote[0]: must be a string (got 1)"),
        ({"id": "x1"}, "step x1: id: 'x1' must look like F2, B4 or B4b"),
        ({"id": 7}, "step #1: id: must be a string (got 7)"),
        (
            {"risk": "destructive"},
            "a destructive step (risk: destructive) lists what it deletes and keeps (got deletes: None)",
        ),
        ({"per_target": "x"}, "per_target applies only to fan-out steps (got 'x' without fanout: true)"),
        ({"instructions": "Stop {ss.name}"}, "instructions: {ss.name} is per StorageServer: use it in per_target"),
        ({"undo": "Start {as_s.nmae}"}, "undo: unknown placeholder {as_s.nmae}"),
        (
            {"risk": "destructive", "deletes": [{"delete": {**_OBJECT, "x": 1}, "keep": [_OBJECT]}]},
            "deletes[0].delete: unknown key(s) x (known: at, name, role, shown_as)",
        ),  # fmt: skip
        (
            {"risk": "destructive", "deletes": [{"delete": _OBJECT, "keep": [{**_OBJECT, "at": "{bogus}"}]}]},
            "deletes[0].keep[0].at: unknown placeholder {bogus}",
        ),  # fmt: skip
        (
            {"risk": "destructive", "deletes": [{"delete": _OBJECT, "keep": []}]},
            "deletes[0].keep: must list at least 1 item(s) (got [])",
        ),  # fmt: skip
        (
            {"risk": "destructive", "deletes": [{"delete": _OBJECT, "keep": [_OBJECT], "each": "all"}]},
            "deletes[0].each 'all' is not one of pair",
        ),  # fmt: skip
    ],
)
def test_a_malformed_step_is_named_with_its_key_path_and_value(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RunbookError) as caught:
        validate_steps([{**_VALID, **change}], "failover", "failover.yml")
    assert str(caught.value).startswith("failover.yml: step ")
    assert message in str(caught.value)


def test_a_duplicate_id_and_a_when_on_a_later_step_are_named() -> None:
    with pytest.raises(RunbookError, match=r"step X1: duplicate step id 'X1' \(an earlier step has it\)"):
        validate_steps([_VALID, _VALID], "failover")
    later = {**_VALID, "id": "X2", "when": {"step": "X3", "outcome": "done"}}
    with pytest.raises(RunbookError, match="step X2: when refers to 'X3', which is not an earlier step"):
        validate_steps([_VALID, later], "failover")


def test_the_document_itself_must_be_a_list_of_mappings() -> None:
    with pytest.raises(RunbookError, match=r"^r\.yml: not valid YAML"):
        parse_runbook("- [unclosed", "failover", "r.yml")
    with pytest.raises(RunbookError, match=r"^r\.yml: must be a non-empty YAML list of steps$"):
        parse_runbook("{}", "failover", "r.yml")
    with pytest.raises(RunbookError, match=r"^r\.yml: step #2: must be a mapping of step fields \(got 'x'\)$"):
        validate_steps([_VALID, "x"], "failover", "r.yml")


def test_the_packaged_runbooks_load_with_every_field_as_written() -> None:
    """The models change how the YAML is checked, not what a valid step becomes."""
    for direction, raw in RAW.items():
        specs = load_runbook(direction)  # type: ignore[arg-type]
        assert [s.id for s in specs] == [r["id"] for r in raw]
        for spec, entry in zip(specs, raw, strict=True):
            assert spec.title == entry["title"].strip() and spec.instructions == entry["instructions"].strip()
            assert dict(spec.params) == (entry.get("params") or {})
            assert [dict(d) for d in spec.deletes] == (entry.get("deletes") or [])
            assert spec.fanout is bool(entry.get("fanout", False)) and spec.variant == entry.get("variant", "any")
