"""Step kinds as a small registry of actions, each with one signature: preview, run and probe.

``preview`` says exactly what the step will do with concrete values (it may read, never change);
``run`` does it and returns an Outcome; ``probe`` reads whether the effect is already in place
(True / False) or returns None when no read can tell — used for idempotency and after a crash.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from actions import remote, settings_xml
from actions.errors import DatabaseOperationFailed, ExecutionError, RemoteOperationFailed
from actions.hosts import Host, PlatformConfig
from actions.storage_platform_db import SlaveRowCount, StoragePlatformDb, db_identity, row_preview

SERVICE_TIMEOUT_S = 60.0
TASK_POLL_S = 0.5  # how often the bot looks whether the AccountServer consumed its task file


class Step(Protocol):
    """What an action needs of a resolved runbook step."""

    @property
    def id(self) -> str: ...

    @property
    def action(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...


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


def guid_fact(host: str) -> str:
    return f"guid:{host}"


def guid_at_rest(guid: str) -> dict[str, str]:
    """How a ServerGuid read from a host is kept on the run: masked, and a hash to compare a later reading with.

    The whole GUID is never stored (its first eight characters are the server's one-time password).
    """
    return {"masked": settings_xml.mask_guid(guid), "sha256": guid_hash(guid)}


def guid_hash(guid: str) -> str:
    return hashlib.sha256(settings_xml.normalise_guid(guid).encode("ascii")).hexdigest()


def check_guid_unchanged(host: str, guid: str, recorded: Any) -> None:
    """A ServerGuid read again must be the one recorded earlier in the run (if one was)."""
    if isinstance(recorded, Mapping) and recorded.get("sha256") and recorded["sha256"] != guid_hash(guid):
        raise RemoteOperationFailed(
            f"{host}'s ServerGuid is now {settings_xml.mask_guid(guid)}, not {recorded.get('masked')} as read "
            "earlier in this run; check the host before going on",
            host=host,
        )


def _target_host(ctx: StepContext, target: Target) -> Host:
    if target.host is None:
        raise RemoteOperationFailed(f"step target {target.label} is not a host")
    return ctx.host(target.host)


def _service_name(ctx: StepContext, host: Host, step: Step) -> str:
    which = step.params.get("service") or host.role
    if which == "account_server":
        return ctx.config.redstor.account_server.service
    return ctx.config.redstor.storage_server.service


def settings_path(ctx: StepContext, host: Host) -> str:
    rel = (
        ctx.config.redstor.account_server.settings
        if host.role == "account_server"
        else ctx.config.redstor.storage_server.settings
    )
    return ctx.config.windows_path(rel)


def task_queue_path(ctx: StepContext) -> str:
    return ctx.config.windows_path(ctx.config.redstor.account_server.task_queue)


def read_settings(ctx: StepContext, host: Host) -> remote.FileContent:
    content = remote.read_file(ctx.executor, host, settings_path(ctx, host))
    if not content.exists:
        raise RemoteOperationFailed(f"{settings_path(ctx, host)} does not exist", host=host.name)
    return content


def is_master(ctx: StepContext, host: Host) -> bool:
    """IsSlave False or absent in the host's Settings.xml (its role, running or not)."""
    return settings_xml.read_is_slave(read_settings(ctx, host).content) in (None, False)


def is_running_master(ctx: StepContext, host: Host) -> bool:
    """A Master is an AccountServer whose IsSlave is False/absent AND whose service is Running (spec v3)."""
    if not is_master(ctx, host):
        return False
    return remote.query_service(ctx.executor, host, ctx.config.redstor.account_server.service) == "Running"


def current_master(ctx: StepContext) -> Host:
    """The AccountServer that is the running Master right now (IsSlave False/absent, service Running);
    exactly one must be. A stopped AccountServer whose file still says Master does not count."""
    masters = []
    seen: list[str] = []
    for name in (ctx.site, ctx.partner):
        host = ctx.config.sites[name].account_server
        try:
            if is_running_master(ctx, host):
                masters.append(host)
            else:
                seen.append(f"{host.name}: not a running Master")
        except ExecutionError as exc:
            seen.append(f"{host.name}: not readable ({str(exc).splitlines()[0][:120]})")
            continue  # an unreachable AccountServer cannot be the Master we write to
    if len(masters) != 1:
        found = ", ".join(h.name for h in masters) or "none"
        raise RemoteOperationFailed(
            f"expected exactly one running Master AccountServer, found: {found} ({'; '.join(seen) or 'both are'})"
        )
    return masters[0]


def verify_database(ctx: StepContext, site: str) -> StoragePlatformDb:
    """``site``'s StoragePlatform database, once verified to be the one its AccountServer uses: the server and
    database named by the AccountServer's Settings.xml DatabaseConnection equal those of the site's ODBC
    connection string. Otherwise DatabaseOperationFailed naming only servers and databases; nothing changed."""
    host = ctx.config.sites[site].account_server
    db = ctx.database(site)
    named = settings_xml.read_database_connection(read_settings(ctx, host).content)
    env = ctx.config.db_of(site).odbc_env
    if not named:
        raise DatabaseOperationFailed(
            f"{settings_path(ctx, host)} on {host.name} has no DatabaseConnection, so the bot cannot verify that "
            f"{env} reaches the database {host.name} uses; nothing was changed"
        )
    theirs, ours = db_identity(named), db.identity()
    if not theirs.same_as(ours):
        raise DatabaseOperationFailed(
            f"wrong database: {host.name}'s Settings.xml names {theirs.shown()}, but {env} reaches "
            f"{ours.shown()}; nothing was changed"
        )
    return db


class ServiceAction:
    """Stop, start or restart a Windows service and wait for the state."""

    def __init__(self, verb: str) -> None:
        self.verb = verb

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = _target_host(ctx, target)
        text = f"{self.verb.capitalize()} service {_service_name(ctx, host, step)} on {host.name} ({host.endpoint})"
        if step.params.get("expect_slave"):
            # part of the approved fingerprint: a role that changes before it runs voids the approval
            try:
                value = settings_xml.read_is_slave(read_settings(ctx, host).content)
                role = "a Slave (IsSlave True)" if value is True else "NOT a Slave (IsSlave " + str(value) + ")"
            except ExecutionError as exc:
                role = f"of unknown role ({str(exc).splitlines()[0][:120]})"
            text += f"; {host.name} is {role} now"
        if step.params.get("check_no_running_slave"):
            partner = ctx.as_s.name
            text += (
                f"; first check that no Slave AccountServer service is running and that {partner} is the running Master"
            )
        if step.params.get("read_guid"):
            text += f"; then read {host.name}'s ServerGuid for its one-time password"
        return text

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = _target_host(ctx, target)
        service = _service_name(ctx, host, step)
        if step.params.get("expect_slave"):
            value = settings_xml.read_is_slave(read_settings(ctx, host).content)
            if value is not True:
                raise RemoteOperationFailed(
                    f"{host.name} is not a Slave (IsSlave {'absent' if value is None else value}): stopping it "
                    "would stop a Master. Nothing was changed.",
                    host=host.name,
                )
        if step.params.get("check_no_running_slave"):
            _check_no_running_slave(ctx, exclude=host)
            if not is_running_master(ctx, ctx.as_s):
                raise RemoteOperationFailed(
                    f"{ctx.as_s.name} is not the running Master (IsSlave False and service Running): stopping "
                    f"{host.name} would leave no Master. Nothing was changed.",
                    host=ctx.as_s.name,
                )
        op = {"stop": remote.stop_service, "start": remote.start_service, "restart": remote.restart_service}[self.verb]
        res = op(ctx.executor, host, service, SERVICE_TIMEOUT_S)
        facts: dict[str, Any] = {}
        summary = f"{service} on {host.name}: {res.state}" + ("" if res.changed else " (already)")
        if step.params.get("read_guid"):
            guid = settings_xml.read_server_guid(read_settings(ctx, host).content)
            facts[guid_fact(host.name)] = guid
            summary += f"; ServerGuid read ({settings_xml.mask_guid(guid)})"
        return Outcome(summary, {"service": service, "state": res.state, "changed": res.changed}, facts)

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        if self.verb == "restart":
            return None  # a restart that never happened looks the same as one that did
        host = _target_host(ctx, target)
        state = remote.query_service(ctx.executor, host, _service_name(ctx, host, step))
        return state == ("Stopped" if self.verb == "stop" else "Running")


def _check_no_running_slave(ctx: StepContext, *, exclude: Host) -> None:
    for site in ctx.config.sites.values():
        host = site.account_server
        if host.name == exclude.name:
            continue
        if settings_xml.read_is_slave(read_settings(ctx, host).content) is True:
            state = remote.query_service(ctx.executor, host, ctx.config.redstor.account_server.service)
            if state != "Stopped":
                raise RemoteOperationFailed(
                    f"Slave AccountServer {host.name} is {state}; no Slave AccountServer may be running", host=host.name
                )


class SetIsSlave:
    """Set IsSlave in an AccountServer's Settings.xml; every other byte stays as it was."""

    def _new(self, ctx: StepContext, step: Step, old: bytes) -> bytes:
        return settings_xml.set_is_slave(
            old,
            bool(step.params["value"]),
            add_if_absent=bool(step.params.get("add_if_absent", False)),
            attributes=step.params.get("attributes") or None,
        )

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = _target_host(ctx, target)
        path = settings_path(ctx, host)
        try:
            old = read_settings(ctx, host).content
        except ExecutionError as exc:
            return f"Set IsSlave to {step.params['value']} in {path} on {host.name} (cannot read it now: {exc})"
        new = self._new(ctx, step, old)
        if new == old:
            return f"{path} on {host.name} already has IsSlave {step.params['value']}; nothing to change."
        return settings_xml.settings_change(old, new, filename=f"{host.name}:{path}")

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = _target_host(ctx, target)
        path = settings_path(ctx, host)
        current = read_settings(ctx, host)
        new = self._new(ctx, step, current.content)
        if new == current.content:
            return Outcome(f"IsSlave already {step.params['value']} on {host.name}", {"changed": False})
        res = remote.replace_file(ctx.executor, host, path, new, current.sha256)
        return Outcome(
            f"IsSlave set to {step.params['value']} on {host.name}; original kept as {res.backup_path}",
            {"changed": res.changed, "backup_path": res.backup_path},
        )

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        host = _target_host(ctx, target)
        value = settings_xml.read_is_slave(read_settings(ctx, host).content)
        return (value is True) if step.params["value"] else (value in (None, False))


class ReadGuid:
    """Read a server's ServerGuid (its one-time password source); read-only."""

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = _target_host(ctx, target)
        return f"Read ServerGuid from {settings_path(ctx, host)} on {host.name} (kept by the bot, shown masked)"

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = _target_host(ctx, target)
        guid = settings_xml.read_server_guid(read_settings(ctx, host).content)
        return Outcome(f"ServerGuid of {host.name}: {settings_xml.mask_guid(guid)}", {}, {guid_fact(host.name): guid})

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return guid_fact(_target_host(ctx, target).name) in ctx.facts


class CheckIsSlave:
    """R1b: the freshly installed AccountServer must be a Slave (IsSlave True) before it is added; read-only."""

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = _target_host(ctx, target)
        return f"Read IsSlave in {settings_path(ctx, host)} on {host.name}: it must be True (read-only)"

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = _target_host(ctx, target)
        content = read_settings(ctx, host).content
        value = settings_xml.read_is_slave(content)
        if value is not True:
            found = "has no IsSlave element (absent means Master)" if value is None else "has IsSlave False (Master)"
            raise RemoteOperationFailed(
                f"{settings_path(ctx, host)} on {host.name} {found}: adding it now would make two Masters. "
                "Set <IsSlave>True</IsSlave> in it, then Retry.",
                host=host.name,
            )
        facts: dict[str, Any] = {}
        summary = f"{host.name} is a Slave (IsSlave True)"
        if step.params.get("read_guid"):
            guid = settings_xml.read_server_guid(content)
            facts[guid_fact(host.name)] = guid
            summary += f"; ServerGuid read ({settings_xml.mask_guid(guid)})"
        return Outcome(summary, {"is_slave": True}, facts)

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return settings_xml.read_is_slave(read_settings(ctx, _target_host(ctx, target)).content) is True


class DropTaskFile:
    """Drop Failover.UpdateSettingsOnSS into the current Master's task queue."""

    def _master(self, ctx: StepContext, step: Step, target: Target) -> Host:
        spec = getattr(step, "spec", None)
        if spec is not None and spec.target == "current_master" or target.host is None:
            return current_master(ctx)  # whichever AccountServer is Master at this moment
        return ctx.host(target.host)

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        try:
            host = self._master(ctx, step, target)
            where = f"{host.name} ({host.endpoint}), the current Master"
        except ExecutionError as exc:
            where = f"the current Master AccountServer (not determined yet: {exc})"
        return f"Create the empty file {remote.TASK_FILE} in {task_queue_path(ctx)} on {where}"

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = self._master(ctx, step, target)
        folder = task_queue_path(ctx)
        res = remote.drop_task_file(ctx.executor, host, folder)
        waited = self._await_consumed(ctx, host, folder)
        dropped = "was already waiting in" if res.already_waiting else "dropped in"
        return Outcome(
            f"{remote.TASK_FILE} {dropped} {host.name}'s task queue and consumed by the AccountServer "
            f"(after {waited:.1f} s)",
            {
                "host": host.name,
                "created": not res.already_waiting,
                "already_waiting": res.already_waiting,
                "consumed": True,
                "waited_s": round(waited, 1),
            },
        )

    def _await_consumed(self, ctx: StepContext, host: Host, folder: str) -> float:
        """Poll until the AccountServer has consumed (deleted) the task file, at most task_queue_timeout_s."""
        timeout = ctx.config.redstor.account_server.task_queue_timeout_s
        started = time.monotonic()
        while remote.task_file_waiting(ctx.executor, host, folder):
            waited = time.monotonic() - started
            if waited >= timeout:
                service = ctx.config.redstor.account_server.service
                raise RemoteOperationFailed(
                    f"{folder}\\{remote.TASK_FILE} on {host.name} was not consumed within {timeout:g} s. Check that "
                    f"{service} on {host.name} is Running as the Master (IsSlave False) and that {folder} is the "
                    "task queue that AccountServer reads (redstor.account_server.task_queue). When it has been "
                    "consumed, Retry (it is not dropped twice) or two approvers Mark done.",
                    host=host.name,
                )
            time.sleep(min(TASK_POLL_S, max(0.05, timeout - waited)))
        return time.monotonic() - started

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return None  # dropped and consumed, dropped and waiting, or never dropped: a read cannot prove consumption


class PointSlaveRow:
    """B4: re-point the Slave AccountServer's BackupServer row at the demoted Master, if the GUIDs match.

    The database is the current Master's (its site's), verified before any write to be the one that
    AccountServer's Settings.xml names. Outcomes recorded as ``outcome:B4``: ``matched`` (row edited),
    ``needs_console`` (a different ServerGUID, no Slave row or several: B4b adds it in the Console). A wrong
    or unreachable database fails the step (no B4b: the AccountServer would be added twice, KB line 33).
    """

    def _guid(self, ctx: StepContext) -> str:
        # Read again from the host (only a masked GUID and a hash are kept), and compare with what B1 read.
        guid = settings_xml.read_server_guid(read_settings(ctx, ctx.as_p).content)
        check_guid_unchanged(ctx.as_p.name, guid, ctx.facts.get(guid_fact(ctx.as_p.name)))
        return guid

    def _database(self, ctx: StepContext) -> tuple[Host, StoragePlatformDb]:
        master = current_master(ctx)
        return master, verify_database(ctx, master.site)

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        master, db = self._database(ctx)
        where = f"StoragePlatform database of {master.name} (verified: {db.identity().shown()})"
        guid = self._guid(ctx)
        try:
            before = db.slave_account_server_row()
        except SlaveRowCount as exc:
            return f"{where}: {exc}. Nothing will be changed here; B4b adds {ctx.as_p.name} in the Console."
        if not settings_xml.normalise_guid(before.guid) == settings_xml.normalise_guid(guid):
            return (
                f"{where}: the Slave AccountServer row's ServerGUID does not match "
                f"{ctx.as_p.name}'s ({settings_xml.mask_guid(guid)}): nothing will be changed here; "
                "B4b adds it in the Console.\n" + row_preview(before, None)
            )
        after = type(before)(guid=before.guid, ip=ctx.as_p.address, online=True, role=before.role, raw={})
        return f"{where}: UPDATE one row of {ctx.config.db.table}:\n" + row_preview(before, after)

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        master, db = self._database(ctx)
        facts_key = f"outcome:{step.id}"
        try:
            out = db.point_slave_row_at(self._guid(ctx), ctx.as_p.address)
        except SlaveRowCount as exc:
            found = "no_slave_row" if exc.count == 0 else "several_slave_rows"
            summary = f"{exc}; add {ctx.as_p.name} in the Console (next step)"
            return Outcome(summary, {"outcome": found, "changed": False, "database_of": master.name},
                           {facts_key: "needs_console"})  # fmt: skip
        if out.matched:
            summary = f"Slave AccountServer row now IP {ctx.as_p.address}, OnLine true" + (
                "" if out.changed else " (already)"
            )
            result = {"outcome": "matched", "changed": out.changed, "database_of": master.name}
            return Outcome(summary, result, {facts_key: "matched"})
        summary = "ServerGUIDs differ: nothing changed; add the AccountServer in the Console (next step)"
        result = {"outcome": "guid_mismatch", "changed": False, "database_of": master.name}
        return Outcome(summary, result, {facts_key: "needs_console"})

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return ctx.database(current_master(ctx).site).slave_row_points_at(self._guid(ctx), ctx.as_p.address)


class PersonAction:
    """Manual, wait and confirm steps: a person acts; the bot only shows the instructions."""

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        return ""

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        raise RemoteOperationFailed(f"step {step.id} is performed by a person, not by the bot")

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return None


REGISTRY: dict[str, Action] = {
    "service.stop": ServiceAction("stop"),
    "service.start": ServiceAction("start"),
    "service.restart": ServiceAction("restart"),
    "settings.set_is_slave": SetIsSlave(),
    "settings.read_guid": ReadGuid(),
    "settings.check_is_slave": CheckIsSlave(),
    "taskqueue.drop": DropTaskFile(),
    "db.point_slave_row": PointSlaveRow(),
    "manual": PersonAction(),
    "wait": PersonAction(),
    "confirm": PersonAction(),
}


def action_for(name: str) -> Action:
    if name == "preflight":
        from actions.preflight import PREFLIGHT

        return PREFLIGHT
    try:
        return REGISTRY[name]
    except KeyError:
        raise RemoteOperationFailed(f"no action {name!r}") from None
