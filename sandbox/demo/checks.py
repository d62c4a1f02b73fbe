"""The demo's checks after the failover and after the failback, each read from the platform, Slack and the audit."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

from bot.config import Host
from bot.runs.runbook import deletion_line
from sandbox.demo.cast import ALICE, CONSUME_DEADLINE_S, NAMES
from sandbox.demo.facts import (
    backup_server_roles,
    changing_ops,
    expected_failback_ops,
    expected_failover_ops,
    is_slave_on,
    multiset_diff,
    services_on,
    wait_until,
    waiting_tasks,
)
from sandbox.demo.printing import Demo, RunOutcome

if TYPE_CHECKING:
    from sandbox.rehearsal import Rehearsal


def check_failover(demo: Demo, r: Rehearsal, outcome: RunOutcome, site: str) -> None:
    group = "After the failover"
    config = r.config
    as_s = config.site(config.site(site).partner).account_server
    service = config.redstor.account_server.service
    is_slave = is_slave_on(r, as_s)
    demo.check(
        group,
        f"{as_s.name} is the Master: IsSlave False in its Settings.xml",
        is_slave is False,
        f"IsSlave is {is_slave}",
    )
    role = backup_server_roles(r).get(as_s.name)
    demo.check(
        group,
        f"BackupServer: {as_s.name}'s role is MasterAccountServer",
        role == "MasterAccountServer",
        f"role is {role}",
    )
    state = services_on(r, as_s).get(service)
    demo.check(group, f"{as_s.name}'s {service} service is Running", state == "Running", f"it is {state}")
    _check_tasks(demo, r, group, as_s, outcome)
    seen = changing_ops(r.operations()[outcome.ops_before :])
    expected = expected_failover_ops(config, site)
    demo.check(
        group,
        f"operations.jsonl: {len(expected)} host operations, each once, in order (F1 F2 F3 F4 F7 on {as_s.name})",
        seen == expected,
        f"saw {seen}",
    )


def _check_tasks(demo: Demo, r: Rehearsal, group: str, account: Host, outcome: RunOutcome) -> None:
    """Every task file dropped in the run was consumed by the Master (within a second), and no queue holds one."""
    queues = [site.account_server for site in r.config.sites.values()]
    emptied = wait_until(lambda: not any(waiting_tasks(r, h) for h in queues), CONSUME_DEADLINE_S)
    ops = r.operations()[outcome.ops_before :]
    created = sum(
        1
        for o in ops
        if o["host"] == account.name
        and o["operation"] == "taskqueue.drop"
        and o.get("changed") is not False
        and o.get("outcome") == "ok"
    )
    consumed = sum(1 for o in ops if o["host"] == account.name and o["operation"] == "taskqueue.consume")
    names = " and ".join(h.name for h in queues)
    demo.check(
        group,
        f"task files consumed: {consumed} of {created} by {account.name}; the task queues of {names} are empty",
        emptied and consumed >= 1 and consumed == created,
        f"waiting: { {h.name: waiting_tasks(r, h) for h in queues} }; dropped {created}, consumed {consumed}",
    )


def check_failback(demo: Demo, r: Rehearsal, outcome: RunOutcome, site: str) -> None:
    from bot.report import build_report

    group = "After the failback"
    config = r.config
    p = config.site(site)
    as_p, as_s = p.account_server, config.site(p.partner).account_server
    slaves = {h.name: is_slave_on(r, h) for h in (as_p, as_s)}
    demo.check(
        group,
        f"roles restored in Settings.xml: {as_p.name} IsSlave False (Master), {as_s.name} IsSlave True (Slave)",
        slaves[as_p.name] is False and slaves[as_s.name] is True,
        f"IsSlave: {slaves}",
    )
    roles = backup_server_roles(r)
    demo.check(
        group,
        f"BackupServer: {as_p.name} MasterAccountServer, {as_s.name} SlaveAccountServer",
        roles.get(as_p.name) == "MasterAccountServer" and roles.get(as_s.name) == "SlaveAccountServer",
        f"roles: {roles}",
    )
    not_running = {
        f"{h.name}/{svc}": st for h in config.hosts() for svc, st in services_on(r, h).items() if st != "Running"
    }
    empty = [h.name for h in config.hosts() if not services_on(r, h)]
    demo.check(
        group,
        f"every service Running on all {len(config.hosts())} hosts",
        not not_running and not empty,
        f"not running: {not_running}; no services on: {empty}",
    )
    _check_tasks(demo, r, group, as_p, outcome)
    seen = changing_ops(r.operations()[outcome.ops_before :])
    expected = expected_failback_ops(config, site)
    demo.check(
        group,
        f"operations.jsonl: the failback's {len(expected)} host operations, each exactly once",
        Counter(seen) == Counter(expected),
        multiset_diff(seen, expected),
    )
    view = r.service.view(outcome.run_id)
    destructive = [sv for sv in view.steps if sv.step.risk == "destructive"]
    bad = {
        sv.step.id: [NAMES.get(u, u) for u in sv.approvers]
        for sv in destructive
        if len(set(sv.approvers)) < 2 or ALICE in sv.approvers
    }
    lines = [deletion_line(d) for sv in destructive for d in sv.step.deletions]
    messages = r.slack.thread(view.run.channel, view.run.thread_ts or "")
    versions = [m.blocks for m in messages] + [blocks for m in messages for _, blocks in m.history]
    thread = json.dumps(versions, ensure_ascii=False)
    demo.check(
        group,
        f"every deletion was shown as DELETE … · KEEP … ({len(lines)} lines, e.g. {lines[0] if lines else '-'})",
        bool(lines) and all(line in thread for line in lines),
        "a DELETE … · KEEP … line is missing from the step cards",
    )
    if view.plan.has("B4"):
        b4 = json.loads(view.step("B4").row.result or "{}")
        right = r.platform.database(p.partner).path.name
        wrong = r.platform.database(site).path.name
        preview = view.step("B4").row.preview or ""
        demo.check(
            group,
            f"B4 changed only the promoted Master's database: {as_s.name}'s {right} (verified against its "
            f"Settings.xml), not {wrong}",
            b4.get("database_of") == as_s.name and right in preview and wrong not in preview,
            f"B4 result {b4}; preview {preview[:300]}",
        )
    approvers = sorted({NAMES.get(u, u) for sv in destructive for u in sv.approvers})
    demo.check(
        group,
        f"deletes ({', '.join(sv.step.id for sv in destructive)}) approved by two different people: "
        + " and ".join(approvers),
        bool(destructive) and not bad,
        f"approvers: {bad}" if destructive else "no destructive step in the run",
    )
    revealed = {
        e["actor"]
        for run in (outcome.run_id,)
        for e in build_report(r.runtime.store, run).events
        if e["event"] == "otp.revealed"
    }
    told = {e.user for e in r.slack.ephemerals() if "One-time password" in e.text}
    demo.check(
        group,
        "one-time passwords revealed only ephemerally, to "
        + ", ".join(sorted(NAMES.get(u, u) for u in told))
        + ", and audited",
        bool(revealed) and told == revealed,
        f"audited reveals by {sorted(revealed)}, ephemeral answers to {sorted(told)}",
    )
