"""The F0 preflight step: the partner must be healthy, the failed site may be down, roles checked, no split brain."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actions import remote, settings_xml
from actions.base import Outcome, Step, StepContext, Target
from actions.errors import ExecutionError, RemoteOperationFailed
from actions.hosts import Host
from actions.probes import CheckResult, probe_database, probe_host, probe_threads, short_error
from actions.reads import read_settings


class Preflight:
    """F0: the partner must be healthy; the failed site may be down; roles checked; refuse a split brain."""

    def _hosts(self, ctx: StepContext) -> tuple[list[Host], list[Host]]:
        """P's and S's hosts in this run: the AccountServers, and the StorageServer pairs in its scope."""
        p, s = ctx.config.sites[ctx.site], ctx.config.sites[ctx.partner]
        if ctx.pairs is None:
            return [p.account_server, *p.storage_servers], [s.account_server, *s.storage_servers]
        ss_names = {a for a, _ in ctx.pairs}
        ms_names = {b for _, b in ctx.pairs}
        return (
            [p.account_server, *(h for h in p.storage_servers if h.name in ss_names)],
            [s.account_server, *(h for h in s.storage_servers if h.name in ms_names)],
        )

    def _results(self, ctx: StepContext) -> tuple[list[CheckResult], list[CheckResult], CheckResult, CheckResult]:
        hosts_p, hosts_s = self._hosts(ctx)
        ex = ctx.executor
        with ThreadPoolExecutor(max_workers=probe_threads(len(hosts_p) + len(hosts_s))) as pool:
            db_p = pool.submit(probe_database, ctx.config, ctx.site, ctx.database, ex)
            db_s = pool.submit(probe_database, ctx.config, ctx.partner, ctx.database, ex)
            fp = [pool.submit(probe_host, ctx.config, ex, h) for h in hosts_p]
            fs = [pool.submit(probe_host, ctx.config, ex, h) for h in hosts_s]
            return (
                [r for f in fp for r in f.result()],
                [r for f in fs for r in f.result()],
                db_s.result(),
                db_p.result(),
            )

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        text = f"Read-only checks of {ctx.partner} (must be healthy) and {ctx.site} (may be down)"
        if ctx.scope == "storage":
            return text + "; scope=storage: no role check, no split-brain guard"
        return text + f", the AccountServers' roles and the split-brain guard on {ctx.as_p.name}"

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        results_p, results_s, db_s, db_p = self._results(ctx)
        lines = [f"{'✓' if r.ok else '✗'} {r.host} {r.check}: {r.detail}" for r in results_s + [db_s]]
        lines += [f"{'✓' if r.ok else '·'} {r.host} {r.check}: {r.detail}" for r in results_p + [db_p]]
        failed = [r for r in results_s + [db_s] if not r.ok]
        result: dict[str, Any] = {"checks": lines}
        if failed:
            raise RemoteOperationFailed(
                f"{ctx.partner} is not healthy: "
                + "; ".join(f"{r.host} {r.check}: {r.detail}" for r in failed)
                + "\n"
                + "\n".join(lines)
            )
        facts: dict[str, Any] = {}
        headline_roles = ""
        # A storage-only failover leaves the AccountServers alone: the failed site's Master stays Master.
        if ctx.scope != "storage":
            guard = self.split_brain(ctx)
            if guard:
                raise RemoteOperationFailed(
                    f"split-brain guard: {guard}. Stop it first, or two approvers may override with a reason "
                    "(Mark done).\n" + "\n".join(lines)
                )
            refusal, headline_roles, promoted = self.roles(ctx)
            if refusal:
                raise RemoteOperationFailed(refusal + "\n" + "\n".join(lines))
            if promoted:
                facts["promoted_before"] = "yes"
        problems = sum(1 for r in results_p + [db_p] if not r.ok)
        headline = f"{ctx.partner} healthy; {problems} problem(s) at {ctx.site}"
        if problems:
            headline += " (expected during a disaster)"
        if headline_roles:
            headline += "\n" + headline_roles
        return Outcome(headline + "\n" + "\n".join(lines), result, facts)

    def roles(self, ctx: StepContext) -> tuple[str | None, str, bool]:
        """(refusal, what F0 found, AS_S promoted before) before anything changes (spec v3 §2).

        AS_S must be a Slave, or already the Master (a rerun after an abort, or after an account failover:
        F1–F3 are then settled by their probes). A platform that is healthy with its running Master at S
        and a running Slave at P is refused: the run would stop the only running Master.
        """
        a_s, a_p = ctx.as_s, ctx.as_p
        service = ctx.config.redstor.account_server.service
        is_slave = settings_xml.read_is_slave(read_settings(ctx, a_s).content)
        if is_slave is True:
            return None, f"roles: {a_s.name} is a Slave (IsSlave True): it will be promoted", False
        state_s = remote.query_service(ctx.executor, a_s, service)
        try:
            p_slave = settings_xml.read_is_slave(read_settings(ctx, a_p).content) is True
            state_p = remote.query_service(ctx.executor, a_p, service)
        except ExecutionError:
            p_slave, state_p = False, "unreachable"
        if state_s == "Running" and p_slave and state_p == "Running":
            return (
                f"wrong direction: {a_s.name} at {ctx.partner} is already the running Master and {a_p.name} at "
                f"{ctx.site} a running Slave, so the platform is healthy with its Master at {ctx.partner}. "
                f"This run would stop the platform's only running Master at F1. Nothing was changed. Did you "
                f"mean `/failover start {ctx.partner}` (fail over {ctx.partner} to {ctx.site})?",
                "",
                False,
            )
        running = "and its service is Running" if state_s == "Running" else f"but its service is {state_s}"
        return (
            None,
            f"roles: {a_s.name} already has IsSlave {'absent' if is_slave is None else 'False'} {running}: it was "
            "promoted before (a rerun, or an account failover already done); F1–F3 are settled by their checks",
            True,
        )

    def split_brain(self, ctx: StepContext) -> str | None:
        """Why the failed site's AccountServer blocks F0, or None: it answers and is still a running Master,
        or it answers but its role cannot be read (fails closed)."""
        host = ctx.as_p
        try:
            state = remote.query_service(ctx.executor, host, ctx.config.redstor.account_server.service)
        except ExecutionError:
            return None  # it does not answer: not a running Master anyone can reach
        try:
            is_slave = settings_xml.read_is_slave(read_settings(ctx, host).content)
        except ExecutionError as exc:
            return (
                f"{host.name} answers (service {state}) but its role cannot be read ({short_error(exc)}); it may be a "
                "running Master"
            )
        if is_slave is not True and state == "Running":
            return f"{host.name} answers and is still a running Master AccountServer"
        return None

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return None  # read-only: running it again is the probe


PREFLIGHT = Preflight()
