"""The plan as text: what ``failover-bot plan`` prints (and ``--short``), every value concrete, never an OTP."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from actions.guid import mask_guids
from bot.config import Config
from bot.runs.runbook import TASK_FILE, Plan, ResolvedStep


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
