"""Resolving a runbook against the configuration: which steps a run has, on which hosts, with which words."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from bot.config import Config, Host, Site
from bot.errors import UsageError
from bot.runs.runbook.loading import load_runbook
from bot.runs.runbook.model import (
    MASTER_RETURNS_AT,
    TASK_FILE,
    ConsoleObject,
    Deletion,
    Plan,
    ResolvedStep,
    StepSpec,
    Target,
    deletion_line,
)
from bot.runs.runbook.options import Direction, FailoverHistory, RunOptions, check_options, explain_options


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


def plan_for_command(
    config: Config, direction: Direction, site: str, args: Sequence[str], history: FailoverHistory
) -> Plan:
    """THE plan a command asks for (``plan``, ``/failover plan``, ``/failover start|failback``): the site checked,
    the options parsed with a failback's defaults from ``history``, and where its scope came from."""
    config.site(site)
    options, source = explain_options(direction, site, args, history)
    return dataclasses.replace(resolve(config, direction, site, options), options_source=source)


def resolve(config: Config, direction: Direction, site: str, options: RunOptions) -> Plan:
    """The runbook for ``direction`` with P = ``site`` and S = its partner, filtered and made concrete."""
    check_options(direction, options)
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
