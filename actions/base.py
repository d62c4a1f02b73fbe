"""The one signature of every step action: what a step and its target are, what an action may use and returns.

``preview`` says exactly what the step will do with concrete values (it may read, never change);
``run`` does it and returns an Outcome; ``probe`` reads whether the effect is already in place
(True / False) or returns None when no read can tell — used for idempotency and after a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from actions import remote
from actions.errors import RemoteOperationFailed
from actions.hosts import Host, PlatformConfig

if TYPE_CHECKING:  # the database module loads pyodbc; actions only call what StepContext.database opens
    from actions.storage_platform_db import StoragePlatformDb


class StepSpec(Protocol):
    """What an action reads of the runbook's step definition."""

    @property
    def target(self) -> str: ...  # what the runbook says the step acts on: as_p, current_master, ss, db, ...


class Step(Protocol):
    """What an action needs of a resolved runbook step."""

    @property
    def id(self) -> str: ...

    @property
    def action(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def spec(self) -> StepSpec: ...


class Target(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def host(self) -> str | None: ...

    @property
    def label(self) -> str: ...


@dataclass
class StepContext:
    """What actions may use: configuration, the executor, the run's sites and recorded facts."""

    config: PlatformConfig
    executor: remote.Executor
    site: str  # P: the failed or returning primary
    partner: str  # S
    facts: Mapping[str, Any]
    database: Callable[[str], StoragePlatformDb]  # site name → that site's AccountServer's database
    scope: str = "all"  # all | account | storage
    pairs: tuple[tuple[str, str], ...] | None = None  # (StorageServer, MirrorServer) in the run; None: all

    def host(self, name: str) -> Host:
        return self.config.host(name)

    @property
    def as_p(self) -> Host:
        return self.config.sites[self.site].account_server

    @property
    def as_s(self) -> Host:
        return self.config.sites[self.partner].account_server


@dataclass(frozen=True)
class Outcome:
    """The result of running an action on one target."""

    summary: str  # one line for the step card, secrets masked
    result: dict[str, Any] = field(default_factory=dict)  # stored and audited (scrubbed)
    facts: dict[str, Any] = field(default_factory=dict)  # recorded on the run (may hold GUIDs; never posted)


class Action(Protocol):
    def preview(self, ctx: StepContext, step: Step, target: Target) -> str: ...

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome: ...

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None: ...


def target_host(ctx: StepContext, target: Target) -> Host:
    """The host a step's target names; RemoteOperationFailed for a target that is not a host."""
    if target.host is None:
        raise RemoteOperationFailed(f"step target {target.label} is not a host")
    return ctx.host(target.host)
