"""The runbook's typed data: a step as written (StepSpec), what it deletes, and a plan of resolved steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from actions.remote import TASK_FILE as TASK_FILE  # the task file the bot drops: one name, in actions
from bot.errors import FailoverBotError
from bot.runs import policy
from bot.runs.runbook.options import Direction, RunOptions

Kind = Literal["host", "sql", "manual", "wait", "check"]
Risk = Literal["read", "change", "destructive"]
TargetName = Literal["as_p", "as_s", "current_master", "ss", "ms", "person", "sites", "db"]
Variant = Literal["normal", "rebuilt", "any"]
Origin = Literal["kb", "added", "resolves"]
OtpOwner = Literal["as_p", "ss", "ms"]

KINDS: tuple[str, ...] = get_args(Kind)
RISKS: tuple[str, ...] = get_args(Risk)
TARGETS: tuple[str, ...] = get_args(TargetName)
VARIANTS: tuple[str, ...] = get_args(Variant)
ORIGINS: tuple[str, ...] = get_args(Origin)
OTP_OWNERS: tuple[str, ...] = get_args(OtpOwner)

# From this failback step on, the original AccountServer (AS_P) is expected to be the Master again.
MASTER_RETURNS_AT = "B19"


class RunbookError(FailoverBotError):
    """A packaged runbook file is malformed: names the file, the step and what is wrong."""

    def __init__(self, file: str, step: str, problem: str) -> None:
        self.file = file
        self.step = step
        self.problem = problem
        where = f"{file}: step {step}" if step else file
        super().__init__(f"{where}: {problem}")


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
        """Distinct people who must approve (host/sql) or confirm (manual/wait/check) before it counts as done
        (the rule is policy.needed_approvals)."""
        return policy.needed_approvals(self.kind, self.risk, self.action, destructive_approvals)


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
