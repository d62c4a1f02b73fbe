"""``failover-bot check``, readiness and ``plan --live``: the read-only probes over the production connections
(a WinRM executor of their own unless given one, each site's database as the configuration resolved it)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actions import remote, settings_xml
from actions.base import StepContext
from actions.errors import ExecutionError
from actions.guid import mask_guid
from actions.hosts import PlatformConfig
from actions.probes import CheckResult, format_checks, probe_host, probe_threads, short_error
from actions.probes import probe_database as probe_database_with
from actions.reads import read_settings
from actions.storage_platform_db import StoragePlatformDb
from actions.winrm import WinRMExecutor

# The probes themselves live in actions.probes; named here too for the commands that call check_site.
__all__ = [
    "CheckResult",
    "check_site",
    "format_checks",
    "live_values",
    "probe_database",
    "probe_host",
    "site_databases",
]


def site_databases(config: PlatformConfig) -> Callable[[str], StoragePlatformDb]:
    """Site name → that site's AccountServer's StoragePlatform database, with the configured connection string."""
    return lambda site: StoragePlatformDb.of_site(config.sites[site])


def probe_database(
    config: PlatformConfig,
    site: str,
    database: Callable[[str], StoragePlatformDb] | None = None,
    executor: remote.Executor | None = None,
) -> CheckResult:
    """``probe_database`` of actions.probes, opening the configured database unless given an opener."""
    return probe_database_with(config, site, database or site_databases(config), executor)


def check_site(config: PlatformConfig, site: str, *, executor: remote.Executor | None = None) -> list[CheckResult]:
    """All checks of ``site`` and its partner, hosts probed in parallel; read-only."""
    s = config.site(site)
    hosts = [s.account_server, *s.storage_servers]
    partner = config.sites[s.partner]
    hosts += [partner.account_server, *partner.storage_servers]
    own = executor is None
    ex: remote.Executor = executor or WinRMExecutor()
    try:
        with ThreadPoolExecutor(max_workers=probe_threads(len(hosts))) as pool:
            db_futures = [pool.submit(probe_database, config, name, None, ex) for name in (site, s.partner)]
            futures = [pool.submit(probe_host, config, ex, h) for h in hosts]
            results = [r for f in futures for r in f.result()]
            results += [f.result() for f in db_futures]
    finally:
        if own and isinstance(ex, WinRMExecutor):
            ex.close()
    return results


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
                text = f"ServerGuid {mask_guid(settings_xml.read_server_guid(content))}"
                if host.role == "account_server":
                    text += "; Slave" if settings_xml.read_is_slave(content) else "; Master"
                values[host.name] = text
            except ExecutionError as exc:
                values[host.name] = f"unreadable: {short_error(exc)}"
    finally:
        if own and isinstance(ex, WinRMExecutor):
            ex.close()
    return values


def _ctx(config: PlatformConfig, executor: remote.Executor) -> StepContext:
    return StepContext(
        config=config,
        executor=executor,
        site="",
        partner="",
        facts={},
        database=site_databases(config),
    )
