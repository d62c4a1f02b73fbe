"""Read-only probes of a site and its partner: ``failover-bot check``, the F0 preflight and its split-brain guard."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from actions import remote, settings_xml
from actions.errors import ExecutionError, RemoteOperationFailed
from actions.hosts import Host, PlatformConfig
from actions.registry import (
    Outcome,
    Step,
    StepContext,
    Target,
    read_settings,
    settings_path,
    task_queue_path,
    verify_database,
)
from actions.storage_platform_db import StoragePlatformDb
from actions.winrm import WinRMExecutor

MAX_PROBE_THREADS = 128  # hosts probed at once (each probe mostly waits on its host's round trips)


def _probe_threads(hosts: int) -> int:
    """One thread per host and one for the database, up to MAX_PROBE_THREADS."""
    return max(1, min(MAX_PROBE_THREADS, hosts + 1))


@dataclass(frozen=True)
class CheckResult:
    host: str
    check: str
    ok: bool
    detail: str
    value: str = ""  # what readiness compares: a service's state, an AccountServer's role (Master/Slave)
    skipped: tuple[str, ...] = ()  # checks of this host that could not run because this one failed


def probe_host(config: PlatformConfig, executor: remote.Executor, host: Host) -> list[CheckResult]:
    """Every read-only check of one host, stopping at the first that makes the rest meaningless."""
    out: list[CheckResult] = []
    try:
        info = remote.host_info(executor, host)
        out.append(CheckResult(host.name, "winrm", True, f"reachable, authenticated ({info.hostname})"))
    except ExecutionError as exc:
        not_run = ("service", "Settings.xml", *(("task queue",) if host.role == "account_server" else ()))
        out.append(CheckResult(host.name, "winrm", False, _short(exc), skipped=not_run))
        return out
    service = (
        config.redstor.account_server if host.role == "account_server" else config.redstor.storage_server
    ).service
    powershell, pre = _powershell_check(executor, host, info, service, settings_path(_ctx(config, executor), host))
    out.append(powershell)
    try:
        state = remote.query_service(executor, host, service)
        ok, detail = True, f"{service}: {state}"
        if pre is not None and pre.start_type.lower() == "disabled":
            ok = False
            detail += " — Disabled (start type): it cannot be started until it is Automatic or Manual"
        out.append(CheckResult(host.name, "service", ok, detail, state))
    except ExecutionError as exc:
        out.append(CheckResult(host.name, "service", False, _short(exc)))
    path = settings_path(_ctx(config, executor), host)
    try:
        content = remote.read_file(executor, host, path)
        if not content.exists:
            raise RemoteOperationFailed(f"{path} does not exist")
        guid = settings_xml.read_server_guid(content.content)
        detail = f"ServerGuid {settings_xml.mask_guid(guid)}"
        role = ""
        if host.role == "account_server":
            is_slave = settings_xml.read_is_slave(content.content)
            role = "Slave" if is_slave else "Master"
            detail += "; role " + (
                "Slave (IsSlave True)"
                if is_slave
                else "Master (IsSlave " + ("absent" if is_slave is None else "False") + ")"
            )
        out.append(CheckResult(host.name, "Settings.xml", True, detail, role))
    except ExecutionError as exc:
        out.append(CheckResult(host.name, "Settings.xml", False, _short(exc)))
    if host.role == "account_server":
        folder = task_queue_path(_ctx(config, executor))
        try:
            exists, is_dir = remote.path_exists(executor, host, folder)
            ok = exists and is_dir
            out.append(CheckResult(host.name, "task queue", ok, folder + (" exists" if ok else " is missing")))
        except ExecutionError as exc:
            out.append(CheckResult(host.name, "task queue", False, _short(exc)))
    return out


# Execution policies set by Group Policy override -ExecutionPolicy Bypass; Restricted stops every script
# file and script module (Get-FileHash is one in 5.1) from loading.
_BLOCKING_POLICIES = {"Restricted"}


def _powershell_check(
    executor: remote.Executor, host: Host, info: remote.HostInfo, service: str, path: str
) -> tuple[CheckResult, remote.PreflightInfo | None]:
    """Whether PowerShell on ``host`` lets the bot work, said plainly; host.preflight over the stdin route."""
    if info.language_mode != "FullLanguage":
        detail = (
            f"PowerShell runs in {info.language_mode} mode (AppLocker/WDAC): every operation of the bot uses .NET "
            "and will fail on this host; exempt the WinRM account or do these steps by hand"
        )
        return CheckResult(host.name, "powershell", False, detail, info.language_mode), None
    blocking = [
        (scope, policy)
        for scope, policy in info.execution_policies
        if scope in ("MachinePolicy", "UserPolicy") and policy in _BLOCKING_POLICIES
    ]
    if blocking:
        scope, policy = blocking[0]
        detail = (
            f"Group Policy sets the execution policy {policy} ({scope}), which overrides -ExecutionPolicy Bypass "
            "and stops script modules from loading: the bot's operations may fail; ask for an exemption"
        )
        return CheckResult(host.name, "powershell", False, detail, policy), None
    try:
        pre = remote.preflight(executor, host, service, path)
    except ExecutionError as exc:
        return CheckResult(host.name, "powershell", False, f"stdin route (file.replace's): {_short(exc)}"), None
    limit = f"MaxEnvelopeSizekb {pre.max_envelope_size_kb or 'unknown'}"
    size = f"Settings.xml {pre.settings_size:,} bytes" if pre.settings_size is not None else "no Settings.xml"
    dependents = ", ".join(f"{name} ({state})" for name, state in pre.dependents) or "no dependents"
    account = pre.account or "unknown account"
    detail = (
        f"{info.ps_version} {info.language_mode}; stdin ok; {limit}; {size}; "
        f"{pre.service} {pre.start_type} as {account}, {dependents}"
    )
    return CheckResult(host.name, "powershell", True, detail, info.language_mode), pre


def probe_database(
    config: PlatformConfig,
    site: str,
    database: Callable[[str], StoragePlatformDb] | None = None,
    executor: remote.Executor | None = None,
) -> CheckResult:
    """``site``'s StoragePlatform database, read-only: its table and columns and, given an executor, that it is
    the database the site's AccountServer uses (its Settings.xml DatabaseConnection names the same server and
    database as the site's ODBC connection string)."""
    name = f"StoragePlatform ({site})"
    opener = database or (lambda name: StoragePlatformDb.of_site(config.sites[name]))
    try:
        db = opener(site)
        report = db.check_schema()
    except ExecutionError as exc:
        return CheckResult("database", name, False, _short(exc))
    if not report.ok or executor is None:
        return CheckResult("database", name, report.ok, report.summary())
    ctx = StepContext(config=config, executor=executor, site=site, partner=site, facts={}, database=opener)
    try:
        verify_database(ctx, site)
    except ExecutionError as exc:
        return CheckResult("database", name, False, _short(exc))
    host = config.sites[site].account_server.name
    return CheckResult("database", name, True, f"{report.summary()}; the one {host}'s Settings.xml names")


def check_site(config: PlatformConfig, site: str, *, executor: remote.Executor | None = None) -> list[CheckResult]:
    """All checks of ``site`` and its partner, hosts probed in parallel; read-only."""
    s = config.site(site)
    hosts = [s.account_server, *s.storage_servers]
    partner = config.sites[s.partner]
    hosts += [partner.account_server, *partner.storage_servers]
    own = executor is None
    ex: remote.Executor = executor or WinRMExecutor()
    try:
        with ThreadPoolExecutor(max_workers=_probe_threads(len(hosts))) as pool:
            db_futures = [pool.submit(probe_database, config, name, None, ex) for name in (site, s.partner)]
            futures = [pool.submit(probe_host, config, ex, h) for h in hosts]
            results = [r for f in futures for r in f.result()]
            results += [f.result() for f in db_futures]
    finally:
        if own and isinstance(ex, WinRMExecutor):
            ex.close()
    return results


def format_checks(results: list[CheckResult]) -> str:
    width_h = max([len("host"), *(len(r.host) for r in results)])
    width_c = max([len("check"), *(len(r.check) for r in results)])
    width_c = max([width_c, *(len(c) for r in results for c in r.skipped)])
    lines = [f"{'host':<{width_h}}  {'check':<{width_c}}  result  detail"]
    failed: list[str] = []
    skipped = 0
    for r in results:
        lines.append(f"{r.host:<{width_h}}  {r.check:<{width_c}}  {'PASS' if r.ok else 'FAIL':<6}  {r.detail}")
        if not r.ok:
            failed.append(f"  {r.host} {r.check}: {r.detail}")
        for check in r.skipped:  # could not run: shown, not silently left out
            lines.append(f"{r.host:<{width_h}}  {check:<{width_c}}  {'SKIP':<6}  not run: {r.check} failed")
            skipped += 1
    lines.append("")
    if not failed:
        lines.append("all checks passed")
        return "\n".join(lines)
    not_run = f"; {skipped} could not run" if skipped else ""
    lines.append(f"{len(failed)} check(s) failed{not_run}:")
    return "\n".join(lines + failed)


def _short(exc: BaseException) -> str:
    """The first line of an error, without the host prefix (the table already names the host)."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[0]
    host = getattr(exc, "host", None)
    if host and line.startswith(f"{host}: "):
        line = line[len(host) + 2 :]
    return line[:300]


def _ctx(config: PlatformConfig, executor: remote.Executor) -> StepContext:
    return StepContext(
        config=config,
        executor=executor,
        site="",
        partner="",
        facts={},
        database=lambda site: StoragePlatformDb.of_site(config.sites[site]),
    )


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
        with ThreadPoolExecutor(max_workers=_probe_threads(len(hosts_p) + len(hosts_s))) as pool:
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
                f"{host.name} answers (service {state}) but its role cannot be read ({_short(exc)}); it may be a "
                "running Master"
            )
        if is_slave is not True and state == "Running":
            return f"{host.name} answers and is still a running Master AccountServer"
        return None

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return None  # read-only: running it again is the probe


PREFLIGHT = Preflight()


def live_values(config: PlatformConfig, plan: Any, *, executor: remote.Executor | None = None) -> dict[str, str]:
    """Host name -> what a read-only look shows now (role, masked ServerGuid), for ``plan --live``."""
    own = executor is None
    ex: remote.Executor = executor or WinRMExecutor()
    values: dict[str, str] = {}
    ctx = _ctx(config, ex)
    try:
        for host in config.hosts():
            try:
                content = read_settings(ctx, host).content
                text = f"ServerGuid {settings_xml.mask_guid(settings_xml.read_server_guid(content))}"
                if host.role == "account_server":
                    text += "; Slave" if settings_xml.read_is_slave(content) else "; Master"
                values[host.name] = text
            except ExecutionError as exc:
                values[host.name] = f"unreadable: {_short(exc)}"
    finally:
        if own and isinstance(ex, WinRMExecutor):
            ex.close()
    return values
