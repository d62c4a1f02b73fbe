"""Loading the packaged failover/failback YAML runbooks and validating every step."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

import yaml

from bot.runs.runbook.model import KINDS, ORIGINS, OTP_OWNERS, RISKS, TARGETS, VARIANTS, RunbookError, StepSpec
from bot.runs.runbook.options import Direction, check_direction

# action -> (kinds it may have, targets it may act on)
ACTIONS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = MappingProxyType(
    {
        "preflight": (frozenset({"check"}), frozenset({"sites"})),
        "service.stop": (frozenset({"host"}), frozenset({"as_p", "as_s", "ss", "ms"})),
        "service.start": (frozenset({"host"}), frozenset({"as_p", "as_s", "ss", "ms"})),
        "service.restart": (frozenset({"host"}), frozenset({"as_p", "as_s", "ss", "ms"})),
        "settings.set_is_slave": (frozenset({"host"}), frozenset({"as_p", "as_s"})),
        "settings.read_guid": (frozenset({"host"}), frozenset({"as_p", "as_s", "ss", "ms"})),
        "settings.check_is_slave": (frozenset({"host"}), frozenset({"as_p", "as_s"})),
        "taskqueue.drop": (frozenset({"host"}), frozenset({"current_master"})),
        "db.point_slave_row": (frozenset({"sql"}), frozenset({"db"})),
        "manual": (frozenset({"manual"}), frozenset({"person"})),
        "wait": (frozenset({"wait"}), frozenset({"person"})),
        "confirm": (frozenset({"check"}), frozenset({"person"})),
    }
)

_FIELDS = frozenset(
    {
        "id", "title", "kind", "risk", "target", "fanout", "action", "params", "scopes", "variant", "optional",
        "when", "otp", "choices", "records", "instructions", "per_target", "source", "origin", "quote",
        "deletes", "undo", "waits",
    }
)  # fmt: skip
_REQUIRED = ("id", "title", "kind", "risk", "target", "action", "scopes", "instructions", "source")
_ID = re.compile(r"^[A-Z][0-9]+[a-z]?$")
_HOST_PLACEHOLDERS = ("as_p", "as_s", "master", "ss", "ms")
_HOST_ATTRIBUTES = ("name", "endpoint", "address", "port")
_TEXT_PLACEHOLDERS = (
    "site", "partner", "platform", "data_root", "as_settings", "ss_settings", "as_service", "ss_service",
    "task_queue", "task_file", "agent_dns_name", "pairs", "db_table", "db_guid_column", "db_ip_column",
    "db_online_column", "db_role_column", "db_slave_role", "preflight_hosts", "preflight_roles",
)  # fmt: skip


@cache
def load_runbook(direction: Direction) -> tuple[StepSpec, ...]:
    """The packaged runbook for ``direction``, validated; RunbookError if it is malformed."""
    check_direction(direction)
    name = f"{direction}.yml"
    text = resources.files("bot.runs.runbooks").joinpath(name).read_text(encoding="utf-8")
    return parse_runbook(text, direction, name)


def parse_runbook(text: str, direction: Direction, name: str = "<runbook>") -> tuple[StepSpec, ...]:
    """Parse and validate runbook YAML: unknown keys, actions, kinds, risks or targets are errors."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunbookError(name, "", f"not valid YAML: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise RunbookError(name, "", "must be a non-empty YAML list of steps")
    steps: list[StepSpec] = []
    seen: set[str] = set()
    for n, entry in enumerate(raw, 1):
        spec = _parse_step(name, direction, n, entry, seen)
        seen.add(spec.id)
        steps.append(spec)
    return tuple(steps)


def _parse_step(name: str, direction: str, n: int, entry: object, seen: set[str]) -> StepSpec:
    if not isinstance(entry, dict):
        raise RunbookError(name, f"#{n}", "must be a mapping of step fields")
    sid = str(entry.get("id", f"#{n}"))

    def fail(problem: str) -> RunbookError:
        return RunbookError(name, sid, problem)

    unknown = sorted(set(map(str, entry)) - _FIELDS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_FIELDS))})")
    missing = [k for k in _REQUIRED if entry.get(k) in (None, "")]
    if missing:
        raise fail(f"missing required key(s) {', '.join(missing)}")
    if not isinstance(entry["id"], str) or not _ID.match(entry["id"]):
        raise fail("id must look like F2, B4 or B4b")
    if sid in seen:
        raise fail("duplicate step id")

    def text(key: str, *, required: bool = False) -> str | None:
        value = entry.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key} must be a non-empty string")
        return value.strip()

    def one_of(key: str, allowed: Sequence[str], default: str | None = None) -> str:
        value = entry.get(key, default)
        if value not in allowed:
            raise fail(f"{key} {value!r} is not one of {', '.join(allowed)}")
        return cast(str, value)

    def flag(key: str) -> bool:
        value = entry.get(key, False)
        if not isinstance(value, bool):
            raise fail(f"{key} must be true or false")
        return value

    kind = one_of("kind", KINDS)
    risk = one_of("risk", RISKS)
    target = one_of("target", TARGETS)
    action = one_of("action", tuple(ACTIONS))
    variant = one_of("variant", VARIANTS, "any")
    origin = one_of("origin", ORIGINS, "kb")
    fanout = flag("fanout")
    kinds, targets = ACTIONS[action]
    if kind not in kinds:
        raise fail(f"action {action} needs kind {' or '.join(sorted(kinds))}, not {kind}")
    if target not in targets:
        raise fail(f"action {action} acts on {' or '.join(sorted(targets))}, not {target}")
    if direction == "failover" and variant != "any":
        raise fail("variant applies only to failback steps")
    if fanout and target not in ("ss", "ms", "person"):
        raise fail("a fan-out step targets ss, ms or person")
    if not fanout and target in ("ss", "ms"):
        raise fail(f"target {target} is per StorageServer: set fanout: true")

    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise fail("params must be a mapping")
    if action.startswith("service.") and params.get("service") not in ("account_server", "storage_server"):
        raise fail("service actions need params.service: account_server or storage_server")
    if action == "settings.set_is_slave" and not isinstance(params.get("value"), bool):
        raise fail("settings.set_is_slave needs params.value: true or false")

    scopes = entry["scopes"]
    if not isinstance(scopes, list) or not scopes or len(set(scopes)) != len(scopes):
        raise fail("scopes must be a non-empty list without repeats")
    if scopes != ["all"] and not set(scopes) <= {"account", "storage"}:
        raise fail("scopes must be [all] or a list of account / storage")

    source = entry["source"]
    if not isinstance(source, list) or not all(isinstance(x, int) and x > 0 for x in source):
        raise fail("source must be a list of KB line numbers")
    if source != sorted(set(source)):
        raise fail("source must list KB lines once each, ascending")
    quote = entry.get("quote") or []
    if not isinstance(quote, list) or not all(isinstance(q, str) and q.strip() for q in quote):
        raise fail("quote must be a list of non-empty strings")

    when = entry.get("when")
    if when is not None:
        if not isinstance(when, dict) or set(when) not in (
            {"step", "outcome"},
            {"fact"},
            {"fact", "equals"},
            {"fact", "not_equals"},
        ):
            raise fail("when must be {step, outcome}, {fact}, {fact, equals} or {fact, not_equals}")
        if "step" in when and when["step"] not in seen:
            raise fail(f"when refers to {when['step']!r}, which is not an earlier step")
        when = MappingProxyType({str(k): str(v) for k, v in when.items()})

    otp = entry.get("otp")
    if otp is not None and otp not in OTP_OWNERS:
        raise fail(f"otp {otp!r} is not one of {', '.join(OTP_OWNERS)}")
    if otp in ("ss", "ms") and not fanout:
        raise fail(f"otp {otp} is per StorageServer: set fanout: true")
    choices = entry.get("choices")
    if choices is not None and (
        not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices)
    ):
        raise fail("choices must be a list of at least two strings")
    records = text("records")

    instructions = cast(str, text("instructions", required=True))
    per_target = text("per_target")
    if fanout and per_target is None:
        raise fail("a fan-out step needs per_target (the line repeated for every StorageServer)")
    if not fanout and per_target is not None:
        raise fail("per_target applies only to fan-out steps")
    hosts = tuple(h for h in _HOST_PLACEHOLDERS if h not in ("ss", "ms"))
    for key, template, allowed in (("instructions", instructions, hosts), ("per_target", per_target, None)):
        problem = _template_problem(template, allowed) if template is not None else None
        if problem:
            raise fail(f"{key}: {problem}")

    deletes = _parse_deletes(entry.get("deletes"), fanout, fail)
    if (risk == "destructive") != bool(deletes):
        raise fail("a destructive step, and only one, lists what it deletes and keeps (deletes)")
    undo = text("undo")
    if undo is not None:
        problem = _template_problem(undo, hosts)
        if problem:
            raise fail(f"undo: {problem}")

    return StepSpec(
        id=sid,
        title=cast(str, text("title", required=True)),
        kind=kind,
        risk=risk,
        target=target,
        action=action,
        instructions=instructions,
        source=tuple(source),
        scopes=tuple(scopes),
        fanout=fanout,
        params=MappingProxyType(params),
        variant=variant,
        optional=flag("optional"),
        when=when,
        otp=otp,
        choices=tuple(choices) if choices is not None else None,
        records=records,
        per_target=per_target,
        origin=origin,
        quote=tuple(q.strip() for q in quote),
        deletes=deletes,
        undo=undo,
        waits=flag("waits"),
    )


_OBJECT_KEYS = frozenset({"role", "name", "at", "shown_as"})


def _parse_deletes(raw: object, fanout: bool, fail: Any) -> tuple[Mapping[str, Any], ...]:
    """``deletes: [{delete: {role, name, at, shown_as?}, keep: [...], each?: pair, scope?: account|storage}]``."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise fail("deletes must be a non-empty list of {delete, keep}")
    out: list[Mapping[str, Any]] = []
    for entry in raw:
        if not isinstance(entry, dict) or not {"delete", "keep"} <= set(entry) <= {"delete", "keep", "each", "scope"}:
            raise fail("each deletes entry is {delete, keep} with optional each: pair and scope")
        keep = entry["keep"]
        if not isinstance(keep, list) or not keep:
            raise fail("deletes: keep must be a non-empty list (what must NOT be deleted)")
        for obj in [entry["delete"], *keep]:
            if not isinstance(obj, dict) or not {"role", "name", "at"} <= set(obj) <= _OBJECT_KEYS:
                raise fail("deletes: each object is {role, name, at} with optional shown_as")
            if not all(isinstance(v, str) and v.strip() for v in obj.values()):
                raise fail("deletes: role, name, at and shown_as are non-empty strings")
            for template in obj.values():
                problem = _template_problem(template, None)
                if problem:
                    raise fail(f"deletes: {problem}")
        if entry.get("each", "pair" if fanout else None) not in (("pair",) if fanout else (None, "pair")):
            raise fail("deletes: each may only be pair")
        if entry.get("scope") not in (None, "account", "storage"):
            raise fail("deletes: scope is account or storage")
        out.append(MappingProxyType(dict(entry)))
    return tuple(out)


def _template_problem(template: str, hosts: Sequence[str] | None) -> str | None:
    """Why ``template`` cannot be rendered with the known placeholders, or None."""
    allowed_hosts = _HOST_PLACEHOLDERS if hosts is None else hosts
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"bad braces ({exc})"
    for name in fields:
        root, _, attribute = name.partition(".")
        if root in allowed_hosts and attribute in _HOST_ATTRIBUTES:
            continue
        if root in _TEXT_PLACEHOLDERS and not attribute:
            continue
        if root in ("ss", "ms"):
            return f"{{{name}}} is per StorageServer: use it in per_target"
        return f"unknown placeholder {{{name}}}"
    return None
