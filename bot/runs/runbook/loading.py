"""Loading the packaged failover/failback YAML runbooks: each step validated by pydantic models (as config.py
does), every problem a RunbookError naming the file, the step, the key path and the offending value."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from actions.registry import step_rules
from bot.runs.runbook.model import Kind, Origin, OtpOwner, Risk, RunbookError, StepSpec, TargetName, Variant
from bot.runs.runbook.options import Direction, check_direction

# action -> (kinds it may have, targets it may act on): the registry's table, the one list of actions
ACTIONS = step_rules()

_ID = re.compile(r"^[A-Z][0-9]+[a-z]?$")
_HOST_PLACEHOLDERS = ("as_p", "as_s", "master", "ss", "ms")
_STEP_HOSTS = ("as_p", "as_s", "master")  # instructions and undo: one text for the whole step
_HOST_ATTRIBUTES = ("name", "endpoint", "address", "port")
_TEXT_PLACEHOLDERS = (
    "site", "partner", "platform", "data_root", "as_settings", "ss_settings", "as_service", "ss_service",
    "task_queue", "task_file", "agent_dns_name", "pairs", "db_table", "db_guid_column", "db_ip_column",
    "db_online_column", "db_role_column", "db_slave_role", "preflight_hosts", "preflight_roles",
)  # fmt: skip
_WHEN_SHAPES = ({"step", "outcome"}, {"fact"}, {"fact", "equals"}, {"fact", "not_equals"})
_REQUIRED = ("id", "title", "kind", "risk", "target", "action", "scopes", "instructions", "source")


# --------------------------------------------------------------------------- the YAML's shape


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"must be a non-empty string (got {value!r})")
    return value


def _stripped(value: str) -> str:
    return _non_blank(value).strip()


def _placeholders(hosts: Sequence[str]) -> AfterValidator:
    def check(template: str) -> str:
        problem = _template_problem(template, hosts)
        if problem:
            raise ValueError(problem)
        return template

    return AfterValidator(check)


Text = Annotated[StrictStr, AfterValidator(_stripped)]  # kept without surrounding whitespace
StepTemplate = Annotated[StrictStr, AfterValidator(_stripped), _placeholders(_STEP_HOSTS)]
PairTemplate = Annotated[StrictStr, AfterValidator(_stripped), _placeholders(_HOST_PLACEHOLDERS)]
ObjectTemplate = Annotated[StrictStr, AfterValidator(_non_blank), _placeholders(_HOST_PLACEHOLDERS)]  # as written
KbLine = Annotated[StrictInt, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ConsoleObjectYaml(_Strict):
    """A Console object a destructive step deletes or keeps: ``{role, name, at, shown_as?}``, as templates."""

    role: ObjectTemplate
    name: ObjectTemplate
    at: ObjectTemplate
    shown_as: ObjectTemplate = ""


class DeletionYaml(_Strict):
    """One ``deletes`` entry: what is deleted, the look-alikes kept, once or per pair, in which scope."""

    delete: ConsoleObjectYaml
    keep: Annotated[list[ConsoleObjectYaml], Field(min_length=1)]
    each: Literal["pair"] | None = None
    scope: Literal["account", "storage"] | None = None


class StepYaml(_Strict):
    """One runbook step as the YAML must write it (fields in the order problems are reported)."""

    id: StrictStr
    title: Text
    kind: Kind
    risk: Risk
    target: TargetName
    action: StrictStr
    variant: Variant = "any"
    origin: Origin = "kb"
    fanout: StrictBool = False
    params: dict[str, Any] | None = None
    scopes: Annotated[list[Literal["all", "account", "storage"]], Field(min_length=1)]
    source: list[KbLine]
    quote: list[Text] | None = None
    when: dict[str, Any] | None = None
    otp: OtpOwner | None = None
    choices: Annotated[list[StrictStr], Field(min_length=2)] | None = None
    records: Text | None = None
    instructions: StepTemplate
    per_target: PairTemplate | None = None
    deletes: Annotated[list[DeletionYaml], Field(min_length=1)] | None = None
    undo: StepTemplate | None = None
    optional: StrictBool = False
    waits: StrictBool = False

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"{value!r} must look like F2, B4 or B4b")
        return value

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        if value not in ACTIONS:
            raise PydanticCustomError("not_one_of", "not one of the actions", {"allowed": tuple(ACTIONS)})
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or (value != ["all"] and "all" in value):
            raise ValueError(f"must be [all] or a list of account / storage, without repeats (got {value})")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: list[int]) -> list[int]:
        if value != sorted(set(value)):
            raise ValueError(f"must list KB lines once each, ascending (got {value})")
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StepYaml:
        context = info.context or {}
        for problem in _problems(self, context.get("direction", ""), context.get("seen", set())):
            raise ValueError(problem)
        return self


def _problems(step: StepYaml, direction: str, seen: set[str]) -> list[str]:
    """What is wrong between the fields of an otherwise well-formed step (each message names its keys)."""
    out: list[str] = []
    kinds, targets = ACTIONS[step.action]
    params = step.params or {}
    if step.id in seen:
        out.append(f"duplicate step id {step.id!r} (an earlier step has it)")
    if step.kind not in kinds:
        out.append(f"action {step.action} needs kind {' or '.join(sorted(kinds))}, not {step.kind}")
    if step.target not in targets:
        out.append(f"action {step.action} acts on target {' or '.join(sorted(targets))}, not {step.target}")
    if direction == "failover" and step.variant != "any":
        out.append(f"variant applies only to failback steps (got variant: {step.variant})")
    if step.fanout and step.target not in ("ss", "ms", "person"):
        out.append(f"a fan-out step (fanout: true) targets ss, ms or person (got target: {step.target})")
    if not step.fanout and step.target in ("ss", "ms"):
        out.append(f"target {step.target} is per StorageServer: set fanout: true (got fanout: false)")
    if step.action.startswith("service.") and params.get("service") not in ("account_server", "storage_server"):
        out.append(
            f"action {step.action} needs params.service: account_server or storage_server "
            f"(got params.service: {_shown(params.get('service'))})"
        )
    if step.action == "settings.set_is_slave" and not isinstance(params.get("value"), bool):
        out.append(
            f"action {step.action} needs params.value: true or false (got params.value: {_shown(params.get('value'))})"
        )
    if step.when is not None:
        if set(step.when) not in _WHEN_SHAPES:
            out.append(
                "when must be {step, outcome}, {fact}, {fact, equals} or {fact, not_equals} "
                f"(got keys: {', '.join(sorted(step.when)) or 'none'})"
            )
        elif "step" in step.when and str(step.when["step"]) not in seen:
            out.append(f"when refers to {str(step.when['step'])!r}, which is not an earlier step (got {step.when})")
    if step.otp in ("ss", "ms") and not step.fanout:
        out.append(f"otp {step.otp} is per StorageServer: set fanout: true (got fanout: false)")
    if step.fanout and step.per_target is None:
        out.append(
            "a fan-out step (fanout: true) needs per_target, the line repeated for every StorageServer (got None)"
        )
    if not step.fanout and step.per_target is not None:
        out.append(f"per_target applies only to fan-out steps (got {_shown(step.per_target)} without fanout: true)")
    if step.risk == "destructive" and not step.deletes:
        out.append("a destructive step (risk: destructive) lists what it deletes and keeps (got deletes: None)")
    if step.risk != "destructive" and step.deletes:
        out.append(f"only a destructive step lists deletes (got risk: {step.risk})")
    for i, d in enumerate(step.deletes or ()):
        if step.fanout and "each" in d.model_fields_set and d.each is None:
            out.append(f"deletes[{i}].each: a fan-out step deletes per pair; leave each out or write pair (got None)")
    return out


# --------------------------------------------------------------------------- loading


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
    return validate_steps(raw, direction, name)


def validate_steps(raw: object, direction: Direction, name: str = "<runbook>") -> tuple[StepSpec, ...]:
    """Validate a runbook already read from YAML (a list of step mappings); RunbookError on any problem."""
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
        raise RunbookError(name, f"#{n}", f"must be a mapping of step fields (got {_shown(entry)})")
    raw_id = entry.get("id")
    sid = raw_id if isinstance(raw_id, str) and raw_id.isprintable() and 0 < len(raw_id) <= 20 else f"#{n}"
    # a required key left empty (``title:``) is missing, not a wrong value
    given = {k: v for k, v in entry.items() if not (k in _REQUIRED and v in (None, ""))}
    try:
        step = StepYaml.model_validate(given, context={"direction": direction, "seen": seen})
    except ValidationError as exc:
        raise RunbookError(name, sid, _first_problem(exc)) from None
    return StepSpec(
        id=step.id,
        title=step.title,
        kind=step.kind,
        risk=step.risk,
        target=step.target,
        action=step.action,
        instructions=step.instructions,
        source=tuple(step.source),
        scopes=tuple(step.scopes),
        fanout=step.fanout,
        params=MappingProxyType(dict(step.params or {})),
        variant=step.variant,
        optional=step.optional,
        when=MappingProxyType({k: str(v) for k, v in step.when.items()}) if step.when is not None else None,
        otp=step.otp,
        choices=tuple(step.choices) if step.choices is not None else None,
        records=step.records,
        per_target=step.per_target,
        origin=step.origin,
        quote=tuple(step.quote or ()),
        deletes=tuple(MappingProxyType(d.model_dump(exclude_unset=True)) for d in step.deletes or ()),
        undo=step.undo,
        waits=step.waits,
    )


# --------------------------------------------------------------------------- problems in words

_MODELS: Mapping[tuple[str, ...], type[BaseModel]] = {
    (): StepYaml,
    ("deletes",): DeletionYaml,
    ("deletes", "delete"): ConsoleObjectYaml,
    ("deletes", "keep"): ConsoleObjectYaml,
}
_TYPE_WORDS = {
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _key(key: object) -> str:
    """A key as the YAML writes it; quoted when it is not a plain name (a blank or a line break)."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def _at(loc: Sequence[int | str], problem: str) -> str:
    return f"{_path(loc)}: {problem}" if loc else problem


def _first_problem(exc: ValidationError) -> str:
    """The first problem pydantic found, in the runbook's words: key path, what is wrong, the value given."""
    errors = exc.errors(include_url=False)
    for kind, words in (("extra_forbidden", "unknown key(s)"), ("missing", "missing required key(s)")):
        found = [e for e in errors if e["type"] == kind]
        if found:
            parent = found[0]["loc"][:-1]
            keys = [_key(e["loc"][-1]) for e in found if e["loc"][:-1] == parent]
            if kind == "missing":
                return _at(parent, f"{words} {', '.join(keys)}")
            known = sorted(_MODELS[tuple(p for p in parent if isinstance(p, str))].model_fields)
            return _at(parent, f"{words} {', '.join(sorted(keys))} (known: {', '.join(known)})")
    e = errors[0]
    loc, got = e["loc"], _shown(e.get("input"))
    if e["type"] in ("literal_error", "not_one_of"):
        ctx = e.get("ctx") or {}
        allowed = ctx.get("allowed") or re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{_path(loc)} {got} is not one of {', '.join(allowed)}"
    if e["type"] == "too_short":
        return _at(loc, f"must list at least {(e.get('ctx') or {}).get('min_length')} item(s) (got {got})")
    if e["type"] == "value_error":
        return _at(loc, str(e["msg"]).removeprefix("Value error, "))
    return _at(loc, f"{_TYPE_WORDS.get(e['type'], e['msg'])} (got {got})")


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
