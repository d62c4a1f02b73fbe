"""Runbooks as data: loading the packaged failover/failback YAML and resolving it against the configuration."""

from __future__ import annotations

import re
import string
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, cast

import yaml

from bot.config import Config, Host, Site
from bot.errors import FailoverBotError, UsageError

Direction = Literal["failover", "failback"]
Scope = Literal["all", "account", "storage"]

DIRECTIONS: tuple[str, ...] = ("failover", "failback")
SCOPES: tuple[str, ...] = ("all", "account", "storage")
KINDS = ("host", "sql", "manual", "wait", "check")
RISKS = ("read", "change", "destructive")
TARGETS = ("as_p", "as_s", "current_master", "ss", "ms", "person", "sites", "db")
VARIANTS = ("normal", "rebuilt", "any")
ORIGINS = ("kb", "added", "resolves")
OTP_OWNERS = ("as_p", "ss", "ms")
TASK_FILE = "Failover.UpdateSettingsOnSS"

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

# From this failback step on, the original AccountServer (AS_P) is expected to be the Master again.
MASTER_RETURNS_AT = "B19"

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
_GUID = re.compile(r"\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?([0-9a-fA-F]{12})\}?")


class RunbookError(FailoverBotError):
    """A packaged runbook file is malformed: names the file, the step and what is wrong."""

    def __init__(self, file: str, step: str, problem: str) -> None:
        self.file = file
        self.step = step
        self.problem = problem
        where = f"{file}: step {step}" if step else file
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class RunOptions:
    """What a run covers: AccountServer and/or StorageServer steps, which StorageServers, rebuilt site."""

    scope: Scope = "all"
    storage: tuple[str, ...] = ()  # empty: every StorageServer of P
    rebuilt: bool = False


@dataclass(frozen=True)
class StepSpec:
    """One runbook step as written in the YAML."""

    id: str
    title: str
    kind: str
    risk: str
    target: str
    action: str
    instructions: str
    source: tuple[int, ...]
    scopes: tuple[str, ...]
    fanout: bool = False
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    variant: str = "any"
    optional: bool = False
    when: Mapping[str, str] | None = None
    otp: str | None = None
    choices: tuple[str, ...] | None = None
    records: str | None = None
    per_target: str | None = None  # fan-out steps: the line repeated for every StorageServer i
    origin: str = "kb"  # kb | added (the bot's own safety step) | resolves (settles a KB inconsistency)
    quote: tuple[str, ...] = ()  # the KB words this step implements, where one KB line holds several steps
    deletes: tuple[Mapping[str, Any], ...] = ()  # destructive steps: what is deleted and what must be kept
    undo: str | None = None  # change steps: how to put it back if a later step fails
    waits: bool = False  # a long wait for a person (nudged, never escalated), whatever its kind


@dataclass(frozen=True)
class ConsoleObject:
    """A Storage Platform Console object as the Console shows it at that moment: role, name, address:port."""

    role: str  # e.g. "mirror registration", "StorageServer entry", "Slave AccountServer registration"
    name: str
    endpoint: str  # address:port
    shown_as: str = ""  # another name the Console may show for the same object

    def text(self) -> str:
        also = f" (may show as {self.shown_as})" if self.shown_as and self.shown_as != self.name else ""
        return f"{self.role} {self.name}{also} at {self.endpoint}"


@dataclass(frozen=True)
class Deletion:
    """One thing a destructive step deletes, and the look-alikes that must be kept."""

    delete: ConsoleObject
    keep: tuple[ConsoleObject, ...]


def deletion_line(d: Deletion) -> str:
    """THE wording of a deletion, everywhere it is shown (card, confirm dialogs, Done, modals, plan):
    ``DELETE mirror registration ss-a1 at 127.0.10.21:443 · KEEP StorageServer entry ss-a1 at 127.0.20.21:443``.
    """
    return " · ".join([f"DELETE {d.delete.text()}", *(f"KEEP {k.text()}" for k in d.keep)])


CONFIRM_TEXT_LIMIT = 300  # Slack: a confirm dialog's text


def deletions_confirm_text(
    deletions: Sequence[Deletion], lead: str, tail: str = "", *, line: Callable[[str], str] = str
) -> str:
    """A confirm dialog's text naming every deletion, or — when that would not fit Slack's 300 characters —
    their number and where the full list is (never a silently clipped list). ``line`` renders each line
    for its surface (e.g. mrkdwn escaping) before the length is measured."""
    lines = [line(deletion_line(d)) for d in deletions]
    full = f"{lead}\n" + "\n".join(lines) + (f"\n{tail}" if tail else "")
    if len(full) <= CONFIRM_TEXT_LIMIT:
        return full
    short = f"{lead} {len(lines)} deletions — see the list on the card, each as DELETE … · KEEP …."
    return short + (f" {tail}" if tail and len(short) + len(tail) + 1 <= CONFIRM_TEXT_LIMIT else "")


@dataclass(frozen=True)
class Target:
    """What one step (or one part of a fan-out step) acts on, with its concrete values."""

    key: str  # host name, or "person" / "sites" / "db"
    host: str | None  # the host the bot acts on; None for people, the database and both sites
    label: str
    values: Mapping[str, str]
    deletions: tuple[Deletion, ...] = ()  # destructive steps: exactly what this target deletes and keeps


@dataclass(frozen=True)
class ResolvedStep:
    """A step of one plan: its spec, position, concrete targets and rendered instructions."""

    spec: StepSpec
    index: int
    targets: tuple[Target, ...]
    instructions: str
    expected_master: str = ""  # host name of the AccountServer expected to be Master at this step

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def risk(self) -> str:
        return self.spec.risk

    @property
    def action(self) -> str:
        return self.spec.action

    @property
    def params(self) -> Mapping[str, Any]:
        return self.spec.params

    @property
    def optional(self) -> bool:
        return self.spec.optional

    @property
    def fanout(self) -> bool:
        return self.spec.fanout

    @property
    def is_destructive(self) -> bool:
        return self.spec.risk == "destructive"

    @property
    def deletions(self) -> tuple[Deletion, ...]:
        """Every deletion of this step, target by target."""
        return tuple(d for t in self.targets for d in t.deletions)

    @property
    def is_wait(self) -> bool:
        """A step that waits for something slow to finish: nudged at wait_nudge_minutes, never escalated."""
        return self.spec.kind == "wait" or self.spec.waits

    @property
    def kb(self) -> str:
        """The cited KB lines, ranges collapsed: "11–12", "19, 52"."""
        return kb_lines(self.spec.source)

    def approvals_needed(self, destructive_approvals: int) -> int:
        """Distinct people who must approve (host/sql) or confirm (manual/wait/check) before it counts as done.

        Destructive steps need ``destructive_approvals``; the bot's own read-only probes (host/sql reads and
        the preflight) need nobody; every other step needs one approval or one person's *Done*.
        """
        if self.is_destructive:
            return destructive_approvals
        if self.spec.risk == "read" and (self.spec.kind in ("host", "sql") or self.spec.action == "preflight"):
            return 0
        return 1


@dataclass(frozen=True)
class Plan:
    """A runbook resolved for one site, direction and set of options."""

    direction: Direction
    site: str
    partner: str
    options: RunOptions
    steps: tuple[ResolvedStep, ...]
    pairs: tuple[tuple[str, str], ...] = ()  # (StorageServer of P, its MirrorServer at S) in scope
    options_source: str = ""  # failback: where scope and StorageServers came from (shown by plan)

    def step(self, step_id: str) -> ResolvedStep:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"step {step_id} is not in this plan ({', '.join(self.ids)})")

    def has(self, step_id: str) -> bool:
        return any(s.id == step_id for s in self.steps)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.steps)


# --------------------------------------------------------------------------- loading


@cache
def load_runbook(direction: Direction) -> tuple[StepSpec, ...]:
    """The packaged runbook for ``direction``, validated; RunbookError if it is malformed."""
    _check_direction(direction)
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


# --------------------------------------------------------------------------- options


def parse_options(direction: Direction, args: Sequence[str]) -> RunOptions:
    """``scope=…``, ``storage=a,b`` and (failback only) ``rebuilt``; UsageError on anything else."""
    _check_direction(direction)
    usage = "scope=all|account|storage, storage=<name,...>" + (", rebuilt" if direction == "failback" else "")
    scope: str | None = None
    storage: list[str] | None = None
    rebuilt = False
    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.strip().lower()
        if eq and key == "scope":
            if scope is not None:
                raise UsageError("scope= given more than once")
            scope = value.strip().lower()
            if scope not in SCOPES:
                raise UsageError(f"unknown scope {value!r}: use scope=all, scope=account or scope=storage")
        elif eq and key == "storage":
            if storage is not None:
                raise UsageError("storage= given more than once; list the names separated by commas")
            names = [n.strip() for n in value.split(",")]
            if not value.strip() or any(not n for n in names):
                raise UsageError("storage= needs StorageServer names separated by commas, e.g. storage=ss-a1,ss-a2")
            storage = list(dict.fromkeys(names))
        elif not eq and key == "rebuilt":
            if direction != "failback":
                raise UsageError("rebuilt applies only to failback (a primary site that had to be rebuilt)")
            rebuilt = True
        else:
            raise UsageError(f"unknown option {arg!r}; {direction} takes {usage}")
    return RunOptions(scope=cast(Scope, scope or "all"), storage=tuple(storage or ()), rebuilt=rebuilt)


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise UsageError(f"unknown direction {direction!r}: use failover or failback")


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class _HostView:
    """A host as instruction templates see it: {as_p.name}, {as_p.endpoint}, {as_p.address}, {as_p.port}."""

    name: str
    endpoint: str
    address: str
    port: str

    @classmethod
    def of(cls, host: Host) -> _HostView:
        return cls(host.name, host.endpoint, host.address, str(host.port))


def resolve(config: Config, direction: Direction, site: str, options: RunOptions) -> Plan:
    """The runbook for ``direction`` with P = ``site`` and S = its partner, filtered and made concrete."""
    _check_direction(direction)
    if options.scope not in SCOPES:
        raise UsageError(f"unknown scope {options.scope!r}: use all, account or storage")
    if options.rebuilt and direction != "failback":
        raise UsageError("rebuilt applies only to failback (a primary site that had to be rebuilt)")
    p = config.site(site)
    s = config.site(p.partner)
    pairs = _storage_pairs(config, direction, p, s, options)
    specs = load_runbook(direction)
    base = _base_context(config, p, s, pairs, options)
    returns_at = next((i for i, spec in enumerate(specs) if spec.id == MASTER_RETURNS_AT), len(specs))
    steps: list[ResolvedStep] = []
    for position, spec in enumerate(specs):
        if not _selected(spec, options):
            continue
        master = _expected_master(direction, options, position >= returns_at, p, s)
        ctx = {**base, "master": _HostView.of(master)}
        targets = _targets(spec, ctx, p, s, master, pairs, direction, options)
        if spec.fanout:
            header = spec.instructions.format_map(ctx)
            lines = [f"• {t.values['instructions']}" for t in targets]
            instructions = "\n".join([header, *lines])
        else:
            instructions = spec.instructions.format_map(ctx)
            instructions += "".join(f"\n• {deletion_line(d)}" for t in targets for d in t.deletions)
        if spec.undo:
            instructions += "\nIf a later step fails: " + spec.undo.format_map(ctx)
        steps.append(ResolvedStep(spec, len(steps) + 1, targets, instructions, master.name))
    return Plan(
        direction=direction,
        site=p.name,
        partner=s.name,
        options=options,
        steps=tuple(steps),
        pairs=tuple((ss.name, ms.name) for ss, ms in pairs),
    )


def _selected(spec: StepSpec, options: RunOptions) -> bool:
    if options.scope != "all" and options.scope not in spec.scopes:
        return False
    if spec.variant == "any":
        return True
    return spec.variant == ("rebuilt" if options.rebuilt else "normal")


def _expected_master(direction: str, options: RunOptions, p_is_back: bool, p: Site, s: Site) -> Host:
    """The AccountServer expected to be Master at a step; executors still find the real one by IsSlave."""
    if options.scope == "storage":
        return p.account_server  # only StorageServers move: the AccountServers keep their roles
    if direction == "failover":
        return s.account_server
    return p.account_server if p_is_back else s.account_server


def _storage_pairs(config: Config, direction: str, p: Site, s: Site, options: RunOptions) -> list[tuple[Host, Host]]:
    if options.scope == "account":
        if options.storage:
            raise UsageError("storage= applies only with scope=all or scope=storage")
        return []
    known = [ss.name for ss in p.storage_servers]
    if not known:
        raise UsageError(f"{p.name} has no StorageServers to {direction}; use scope=account")
    unknown = [n for n in options.storage if n not in known]
    if unknown:
        raise UsageError(
            f"unknown StorageServer(s) {', '.join(unknown)} at {p.name} (its StorageServers: {', '.join(known)})"
        )
    chosen = [p.storage_server(n) for n in options.storage] if options.storage else list(p.storage_servers)
    unmirrored = [ss.name for ss in chosen if ss.mirror is None]
    if unmirrored:
        raise UsageError(
            f"{', '.join(unmirrored)} has no MirrorServer at {s.name} in the configuration, so it cannot be "
            f"failed over or back; leave it out with storage=<names> (mirrored: "
            f"{', '.join(ss.name for ss in p.storage_servers if ss.mirror) or 'none'})"
        )
    return [(ss, config.host(cast(str, ss.mirror))) for ss in chosen]


def _preflight_texts(p: Site, s: Site, pairs: Sequence[tuple[Host, Host]], options: RunOptions) -> dict[str, str]:
    """F0's words for this scope: which of S's hosts must be healthy, and whether roles are checked."""
    mirrors = [ms.name for _, ms in pairs]
    hosts = f"{s.account_server.name} ({s.account_server.endpoint})"
    if mirrors:
        hosts += " and the MirrorServer" + ("s " if len(mirrors) > 1 else " ") + ", ".join(mirrors)
    if options.scope == "storage":
        roles = (
            "scope=storage leaves the AccountServers as they are: their roles are not changed, so no role check "
            "and no split-brain guard."
        )
    else:
        a_p, a_s = p.account_server.name, s.account_server.name
        roles = (
            f"Roles, before anything changes: {a_s} must be a Slave (IsSlave True), or already the running Master "
            f"(a rerun, or after an account failover: F1–F3 are then settled by their probes); a run that would "
            f"stop the platform's only running Master is refused. Split-brain guard: if {a_p} answers and is "
            f"still a running Master, or answers but its role cannot be read, the run stops here unless two "
            f"approvers override it with a reason."
        )
    return {"preflight_hosts": hosts, "preflight_roles": roles}


def _base_context(
    config: Config, p: Site, s: Site, pairs: Sequence[tuple[Host, Host]], options: RunOptions | None = None
) -> dict[str, Any]:
    redstor = config.redstor
    cols = config.db.columns
    dns = p.account_server.agent_dns_name or s.account_server.agent_dns_name
    return {
        "site": p.name,
        "partner": s.name,
        "platform": config.platform,
        "as_p": _HostView.of(p.account_server),
        "as_s": _HostView.of(s.account_server),
        "data_root": redstor.data_root,
        "as_settings": config.windows_path(redstor.account_server.settings),
        "ss_settings": config.windows_path(redstor.storage_server.settings),
        "as_service": redstor.account_server.service,
        "ss_service": redstor.storage_server.service,
        "task_queue": config.windows_path(redstor.account_server.task_queue),
        "task_file": TASK_FILE,
        "agent_dns_name": dns or "the DNS name your Agents use for the AccountServer",
        "pairs": "; ".join(f"{ss.name} ({ss.endpoint}) ↔ {ms.name} ({ms.endpoint})" for ss, ms in pairs) or "none",
        "db_table": config.db.table,
        "db_guid_column": cols.guid,
        "db_ip_column": cols.ip,
        "db_online_column": cols.online,
        "db_role_column": cols.role,
        "db_slave_role": config.db.slave_account_server_role,
        **_preflight_texts(p, s, pairs, options or RunOptions()),
    }


def _flat(ctx: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in ctx.items():
        if isinstance(value, _HostView):
            out[key] = value.name
            out[f"{key}_endpoint"] = value.endpoint
            out[f"{key}_address"] = value.address
            out[f"{key}_port"] = value.port
        else:
            out[key] = str(value)
    return out


def _deletions(
    spec: StepSpec, ctx: Mapping[str, Any], pairs: Sequence[tuple[Host, Host]], options: RunOptions
) -> tuple[Deletion, ...]:
    """The step's ``deletes`` made concrete: per pair (fan-out, or ``each: pair``) or once."""

    def obj(raw: Mapping[str, str], c: Mapping[str, Any]) -> ConsoleObject:
        return ConsoleObject(
            role=raw["role"].format_map(c),
            name=raw["name"].format_map(c),
            endpoint=raw["at"].format_map(c),
            shown_as=raw.get("shown_as", "").format_map(c),
        )

    out: list[Deletion] = []
    for entry in spec.deletes:
        if entry.get("scope") and options.scope not in ("all", entry["scope"]):
            continue
        contexts = (
            [ctx] if "ss" in ctx or entry.get("each") != "pair" else
            [{**ctx, "ss": _HostView.of(ss), "ms": _HostView.of(ms)} for ss, ms in pairs]
        )  # fmt: skip
        for c in contexts:
            out.append(Deletion(obj(entry["delete"], c), tuple(obj(k, c) for k in entry["keep"])))
    return tuple(out)


def _targets(
    spec: StepSpec,
    ctx: Mapping[str, Any],
    p: Site,
    s: Site,
    master: Host,
    pairs: Sequence[tuple[Host, Host]],
    direction: str = "failover",
    options: RunOptions | None = None,
) -> tuple[Target, ...]:
    options = options or RunOptions()
    if spec.fanout:
        out: list[Target] = []
        for ss, ms in pairs:
            tctx = {**ctx, "ss": _HostView.of(ss), "ms": _HostView.of(ms)}
            values = _flat(tctx)
            values["instructions"] = cast(str, spec.per_target).format_map(tctx)
            deletions = _deletions(spec, tctx, pairs, options)
            if deletions:
                values["instructions"] += "".join(f" {deletion_line(d)}." for d in deletions)
            if spec.otp:
                values["otp_host"] = (
                    ss.name if spec.otp == "ss" else ms.name if spec.otp == "ms" else p.account_server.name
                )
            if spec.target == "ss":
                out.append(Target(ss.name, ss.name, f"{ss.name} ({ss.endpoint})", _frozen(values, ss)))
            elif spec.target == "ms":
                out.append(
                    Target(ms.name, ms.name, f"{ms.name} ({ms.endpoint}), mirror of {ss.name}", _frozen(values, ms))
                )
            elif deletions:
                label = "; ".join(deletion_line(d) for d in deletions)
                out.append(Target(ss.name, None, label, _frozen(values, None), deletions))
            elif direction == "failback":
                label = f"{ms.name} ({ms.endpoint}) → {ss.name} ({ss.endpoint})"
                out.append(Target(ss.name, None, label, _frozen(values, None)))
            else:
                label = f"{ss.name} ({ss.endpoint}) → {ms.name} ({ms.endpoint})"
                out.append(Target(ss.name, None, label, _frozen(values, None)))
        return tuple(out)
    values = _flat(ctx)
    if spec.otp == "as_p":
        values["otp_host"] = p.account_server.name
    host: Host | None
    if spec.target == "as_p":
        host = p.account_server
        target = Target(host.name, host.name, f"{host.name} ({host.endpoint})", _frozen(values, host))
    elif spec.target == "as_s":
        host = s.account_server
        target = Target(host.name, host.name, f"{host.name} ({host.endpoint})", _frozen(values, host))
    elif spec.target == "current_master":
        target = Target(master.name, master.name, f"current Master (expected {master.name})", _frozen(values, master))
    elif spec.target == "db":
        label = f"StoragePlatform database of the current Master (expected {master.name})"
        target = Target("db", None, label, _frozen(values, None))
    elif spec.target == "sites":
        target = Target("sites", None, f"{p.name} and {s.name}", _frozen(values, None))
    else:
        deletions = _deletions(spec, ctx, pairs, options)
        target = Target("person", None, "a person at the Storage Platform Console", _frozen(values, None), deletions)
    return (target,)


def _frozen(values: dict[str, str], host: Host | None) -> Mapping[str, str]:
    if host is not None:
        values = {**values, "host": host.name, "host_endpoint": host.endpoint, "host_address": host.address}
    return MappingProxyType(values)


def completion_note(config: Config, plan: Plan) -> str:
    """What people must know when the run has completed: after a failover that moved the AccountServer, the
    failed site's AccountServer still says Master and comes back as a second Master when its host starts."""
    if plan.direction != "failover" or plan.options.scope == "storage":
        return ""
    p = config.site(plan.site)
    a_p = p.account_server.name
    service = config.redstor.account_server.service
    return (
        f"{a_p} at {plan.site} still has IsSlave False: when its host or service starts again it comes up as a "
        f"second Master (split brain). Keep {service} on {a_p} stopped (set it to Manual or Disabled) until "
        f"`/failover failback {plan.site}` makes it a Slave (B1–B2)."
    )


# --------------------------------------------------------------------------- plan output


def kb_lines(source: Sequence[int]) -> str:
    """KB line numbers with consecutive runs collapsed: (11, 12) -> "11–12", (19, 52) -> "19, 52"."""
    parts: list[str] = []
    run: list[int] = []
    for n in sorted(source):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(_run(run))
        run = [n]
    if run:
        parts.append(_run(run))
    return ", ".join(parts)


def _run(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}"


def mask_guids(text: str) -> str:
    """Every GUID in ``text`` shown only by its last 12 characters (the OTP is its first eight)."""
    return _GUID.sub(lambda m: "********-****-****-****-" + m.group(1).lower(), text)


def format_plan(plan: Plan, config: Config, *, live_values: Mapping[str, str] | None = None) -> str:
    """The ``failover-bot plan`` text: header, then every step with its concrete values; never an OTP."""
    p = config.site(plan.site)
    s = config.site(plan.partner)
    opts = plan.options
    heading = "Failover of" if plan.direction == "failover" else "Failback to"
    arrow = f"{p.name} → {s.name}" if plan.direction == "failover" else f"{p.name} ← {s.name}"
    arrow_pair = "→" if plan.direction == "failover" else "←"
    storage = (
        ", ".join(
            f"{a} ({config.host(a).endpoint}) {arrow_pair} {b} ({config.host(b).endpoint})" for a, b in plan.pairs
        )
        if plan.pairs
        else "none (AccountServers only)"
    )
    subset = "" if not opts.storage else " (subset)"
    redstor = config.redstor
    lines = [
        f"{heading} {p.name} ({arrow}), platform {config.platform}",
        f"  scope: {opts.scope}   StorageServers: {storage}{subset}"
        + (f"   rebuilt: {'yes' if opts.rebuilt else 'no'}" if plan.direction == "failback" else ""),
        f"  AccountServers: {p.account_server.name} ({p.account_server.endpoint}) at {p.name}; "
        f"{s.account_server.name} ({s.account_server.endpoint}) at {s.name}",
        f"  services: {redstor.account_server.service} (AccountServer), "
        f"{redstor.storage_server.service} (StorageServer)",
        f"  files: {config.windows_path(redstor.account_server.settings)}; "
        f"{config.windows_path(redstor.storage_server.settings)}; "
        f"task queue {config.windows_path(redstor.account_server.task_queue)}",
        *([f"  {plan.options_source}"] if plan.options_source else []),
        f"  {len(plan.steps)} steps; destructive steps need {config.slack.destructive_approvals} different approvers; "
        "one-time passwords are never printed",
    ]
    if live_values:
        lines.append("  read now (read-only):")
        lines += [f"    {name}: {mask_guids(str(value))}" for name, value in sorted(live_values.items())]
    lines.append("")
    for step in plan.steps:
        lines += _format_step(plan, step, config, live_values or {})
    return mask_guids("\n".join(lines).rstrip() + "\n")


def _format_step(plan: Plan, step: ResolvedStep, config: Config, live: Mapping[str, str]) -> list[str]:
    spec = step.spec
    flags = [
        f for f in (
            "optional" if spec.optional else "",
            spec.origin if spec.origin != "kb" else "",
            f"{spec.variant} only" if spec.variant != "any" else "",
            f"fan-out ×{len(step.targets)}" if spec.fanout else "",
            "a long wait: nudged, never escalated" if step.is_wait else "",
            _when_text(spec.when),
        ) if f
    ]  # fmt: skip
    head = (
        f"{step.index:>2}. {step.id:<4} {_target_text(step)}  {spec.kind}/{spec.risk}  "
        f"approvals: {step.approvals_needed(config.slack.destructive_approvals)}  KB {step.kb}"
    )
    if flags:
        head += "  (" + ", ".join(flags) + ")"
    out = [head, f"      {spec.title}"]
    for paragraph in step.instructions.split("\n"):
        out += textwrap.wrap(
            paragraph,
            108,
            initial_indent="      ",
            subsequent_indent="        ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    out += [f"      {d}" for d in _details(plan, step, config, live)]
    out.append("")
    return out


def _target_text(step: ResolvedStep) -> str:
    target = step.spec.target
    if target == "current_master":
        return f"{step.expected_master} (current Master)"
    if target == "db":
        return f"database of {step.expected_master}"
    if step.spec.fanout:
        keys = ", ".join(t.key for t in step.targets)
        return keys if target in ("ss", "ms") else f"person ({keys})"
    return step.targets[0].key


def format_plan_short(plan: Plan, config: Config) -> str:
    """One line per step: id, title, where, risk and who must act (``failover-bot plan --short``)."""
    heading = "Failover of" if plan.direction == "failover" else "Failback to"
    lines = [f"{heading} {plan.site} (partner {plan.partner}), scope {plan.options.scope}: {len(plan.steps)} steps"]
    rows = [
        (step.id, step.title, _target_text(step), step.risk, _who_acts(step, config.slack.destructive_approvals))
        for step in plan.steps
    ]
    w_id, w_where, w_risk, w_who = (max(len(r[i]) for r in rows) for i in (0, 2, 3, 4))
    for sid, title, where, risk, who in rows:
        lines.append(f"{sid:<{w_id}}  {where:<{w_where}}  {risk:<{w_risk}}  {who:<{w_who}}  {title}")
    return mask_guids("\n".join(lines) + "\n")


def _who_acts(step: ResolvedStep, destructive_approvals: int) -> str:
    needed = step.approvals_needed(destructive_approvals)
    if needed == 0:
        return "bot (read-only)"
    if step.is_destructive:
        return f"{needed} approvers, not initiator"
    if step.kind in ("host", "sql"):
        return "approver, then bot"
    return "a person (Done)"


def _when_text(when: Mapping[str, str] | None) -> str:
    if not when:
        return ""
    if "step" in when:
        return f"only if {when['step']} ends {when['outcome']}"
    if "equals" in when:
        return f"only if {when['fact']} = {when['equals']}"
    if "not_equals" in when:
        return f"unless {when['fact']} was recorded as {when['not_equals']}"
    return f"only if {when['fact']} was recorded"


def _details(plan: Plan, step: ResolvedStep, config: Config, live: Mapping[str, str]) -> list[str]:
    spec = step.spec
    redstor = config.redstor
    out: list[str] = []
    hosts = [t.host for t in step.targets if t.host]
    if spec.action.startswith("service."):
        service = (
            redstor.account_server.service
            if spec.params["service"] == "account_server"
            else redstor.storage_server.service
        )
        verb = spec.action.split(".", 1)[1]
        out += [f"{verb} service {service} on {t.label}" for t in step.targets]
        if spec.params.get("check_no_running_slave"):
            partner = config.site(plan.partner).account_server.name
            out.append(f"check first: no Slave AccountServer service is running, and {partner} is the running Master")
    if spec.action == "settings.check_is_slave":
        path = config.windows_path(redstor.account_server.settings)
        out.append(f"check: IsSlave in {path} is True (absent or False: the step fails, nothing is added)")
    if spec.action in ("settings.set_is_slave", "settings.read_guid") or spec.params.get("read_guid"):
        which = spec.params.get("settings")
        path = (
            redstor.storage_server.settings
            if which == "storage_server" or spec.target in ("ss", "ms")
            else redstor.account_server.settings
        )
        verb = "edit" if spec.action == "settings.set_is_slave" else "read ServerGuid from"
        out.append(f"{verb} {config.windows_path(path)}")
        if spec.action == "settings.set_is_slave":
            attrs = "".join(f' {k}="{v}"' for k, v in (spec.params.get("attributes") or {}).items())
            value = "True" if spec.params["value"] else "False"
            if not spec.params.get("add_if_absent"):
                absent = "the element must exist; only its value changes, its attributes stay"
                out.append(f"IsSlave value → {value} ({absent})")
            elif spec.params["value"]:
                out.append(
                    f"IsSlave value → {value}; if absent, <IsSlave{attrs}>{value}</IsSlave> is added as a child "
                    "of the root"
                )
            else:
                out.append(f"IsSlave value → {value}; if absent nothing is added (absent already means False)")
    if spec.action == "taskqueue.drop":
        folder = config.windows_path(redstor.account_server.task_queue)
        out.append(f"create empty file {folder}\\{spec.params.get('file', TASK_FILE)} on the current Master")
    if spec.action == "db.point_slave_row":
        cols = config.db.columns
        p_as = config.site(plan.site).account_server
        out.append(
            f"UPDATE {config.db.table} SET {cols.ip} = '{p_as.address}', {cols.online} = true WHERE {cols.role} = "
            f"'{config.db.slave_account_server_role}' AND {cols.guid} = <{p_as.name}'s ServerGuid, read at B3> "
            "— exactly one row, one transaction"
        )
    if spec.otp:
        reader = _otp_reader(plan, step)
        for t in step.targets:
            owner = t.values["otp_host"]
            where = f"read at {reader}; revealed" if reader else f"read from {owner} when revealed"
            out.append(f"one-time password: first 8 characters of {owner}'s ServerGuid ({where} in Slack on request)")
    if spec.params.get("mark_done_choices"):
        asks = " | ".join(f"{k} (records {v})" for k, v in spec.params["mark_done_choices"].items())
        out.append(f"Mark done (two approvers) asks: {asks}")
    if spec.choices:
        recorded = f" (recorded as {spec.records})" if spec.records else ""
        out.append("choices: " + " | ".join(spec.choices) + recorded)
    elif spec.records:
        out.append(f"records: {spec.records}")
    reads_guid = spec.action == "settings.read_guid" or bool(spec.params.get("read_guid")) or bool(spec.otp)
    candidates = hosts + [t.values.get("otp_host", "") for t in step.targets] if reads_guid else []
    shown = [h for h in dict.fromkeys(candidates) if h in live]
    out += [f"read now: {h}: {live[h]}" for h in shown]
    return [mask_guids(d) for d in out]


def _otp_reader(plan: Plan, step: ResolvedStep) -> str | None:
    """The earlier step of this plan that reads the ServerGuid the step's one-time password comes from."""
    for earlier in plan.steps[: step.index - 1]:
        reads = earlier.spec.action == "settings.read_guid" or bool(earlier.spec.params.get("read_guid"))
        if reads and earlier.spec.target == step.spec.otp:
            return earlier.id
    return None
