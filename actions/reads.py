"""Read-only looks at the platform shared by the steps and the preflight: Settings.xml, roles, the current Master,
and the StoragePlatform database verified to be the one an AccountServer uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actions import remote, settings_xml
from actions.base import StepContext
from actions.connection_strings import db_identity
from actions.errors import DatabaseOperationFailed, ExecutionError, RemoteOperationFailed
from actions.hosts import Host, PlatformConfig

if TYPE_CHECKING:  # the database module loads pyodbc; these steps only call what ctx.database opens
    from actions.storage_platform_db import StoragePlatformDb


def settings_path(config: PlatformConfig, host: Host) -> str:
    rel = (
        config.redstor.account_server.settings
        if host.role == "account_server"
        else config.redstor.storage_server.settings
    )
    return config.windows_path(rel)


def task_queue_path(config: PlatformConfig) -> str:
    return config.windows_path(config.redstor.account_server.task_queue)


def read_settings(ctx: StepContext, host: Host) -> remote.FileContent:
    content = remote.read_file(ctx.executor, host, settings_path(ctx.config, host))
    if not content.exists:
        raise RemoteOperationFailed(f"{settings_path(ctx.config, host)} does not exist", host=host.name)
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
            f"{settings_path(ctx.config, host)} on {host.name} has no DatabaseConnection, so the bot cannot verify "
            f"that {env} reaches the database {host.name} uses; nothing was changed"
        )
    theirs, ours = db_identity(named), db.identity()
    if not theirs.same_as(ours):
        raise DatabaseOperationFailed(
            f"wrong database: {host.name}'s Settings.xml names {theirs.shown()}, but {env} reaches "
            f"{ours.shown()}; nothing was changed"
        )
    return db
