"""Read-only probes of one host and of one site's StoragePlatform database, and the table they print as."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actions import remote, settings_xml
from actions.base import StepContext
from actions.errors import ExecutionError, RemoteOperationFailed
from actions.guid import mask_guid
from actions.hosts import Host, PlatformConfig
from actions.reads import settings_path, task_queue_path, verify_database

if TYPE_CHECKING:  # the database module loads pyodbc; probes only call what they are given
    from actions.storage_platform_db import StoragePlatformDb

MAX_PROBE_THREADS = 128  # hosts probed at once (each probe mostly waits on its host's round trips)


def probe_threads(hosts: int) -> int:
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
        out.append(CheckResult(host.name, "winrm", False, short_error(exc), skipped=not_run))
        return out
    service = (
        config.redstor.account_server if host.role == "account_server" else config.redstor.storage_server
    ).service
    powershell, pre = _powershell_check(executor, host, info, service, settings_path(config, host))
    out.append(powershell)
    try:
        state = remote.query_service(executor, host, service)
        ok, detail = True, f"{service}: {state}"
        if pre is not None and pre.start_type.lower() == "disabled":
            ok = False
            detail += " — Disabled (start type): it cannot be started until it is Automatic or Manual"
        out.append(CheckResult(host.name, "service", ok, detail, state))
    except ExecutionError as exc:
        out.append(CheckResult(host.name, "service", False, short_error(exc)))
    path = settings_path(config, host)
    try:
        content = remote.read_file(executor, host, path)
        if not content.exists:
            raise RemoteOperationFailed(f"{path} does not exist")
        guid = settings_xml.read_server_guid(content.content)
        detail = f"ServerGuid {mask_guid(guid)}"
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
        out.append(CheckResult(host.name, "Settings.xml", False, short_error(exc)))
    if host.role == "account_server":
        folder = task_queue_path(config)
        try:
            exists, is_dir = remote.path_exists(executor, host, folder)
            ok = exists and is_dir
            out.append(CheckResult(host.name, "task queue", ok, folder + (" exists" if ok else " is missing")))
        except ExecutionError as exc:
            out.append(CheckResult(host.name, "task queue", False, short_error(exc)))
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
        return CheckResult(host.name, "powershell", False, f"stdin route (file.replace's): {short_error(exc)}"), None
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
    database: Callable[[str], StoragePlatformDb],
    executor: remote.Executor | None = None,
) -> CheckResult:
    """``site``'s StoragePlatform database, read-only: its table and columns and, given an executor, that it is
    the database the site's AccountServer uses (its Settings.xml DatabaseConnection names the same server and
    database as the site's ODBC connection string)."""
    name = f"StoragePlatform ({site})"
    opener = database
    try:
        db = opener(site)
        report = db.check_schema()
    except ExecutionError as exc:
        return CheckResult("database", name, False, short_error(exc))
    if not report.ok or executor is None:
        return CheckResult("database", name, report.ok, report.summary())
    ctx = StepContext(config=config, executor=executor, site=site, partner=site, facts={}, database=opener)
    try:
        verify_database(ctx, site)
    except ExecutionError as exc:
        return CheckResult("database", name, False, short_error(exc))
    host = config.sites[site].account_server.name
    return CheckResult("database", name, True, f"{report.summary()}; the one {host}'s Settings.xml names")


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


def short_error(exc: BaseException) -> str:
    """The first line of an error, without the host prefix (the table already names the host)."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[0]
    host = getattr(exc, "host", None)
    if host and line.startswith(f"{host}: "):
        line = line[len(host) + 2 :]
    return line[:300]
