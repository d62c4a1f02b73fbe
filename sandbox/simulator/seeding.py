"""Creates whatever is missing of a healthy platform before any failover; leaves existing files alone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

from bot.config import Config, Host
from sandbox.simulator.host_state import HostState
from sandbox.simulator.storage_platform import (
    MASTER_ROLE,
    MIRROR_ROLE,
    STORAGE_ROLE,
    BackupServerRow,
    StoragePlatformDatabase,
)

BOM = "\ufeff"

# Modelled on spec/sample-settings-*.xml: the real files have many more elements; the shape matters.
_ACCOUNT_SERVER_SETTINGS = """<?xml version="1.0" encoding="utf-8"?>
<Settings>
  <ServerGuid>{guid}</ServerGuid>
  <ServerName>{name}</ServerName>
{is_slave}  <ServicePort default="443">{port}</ServicePort>
  <DatabaseConnection>{database_connection}</DatabaseConnection>
  <LogLevel choices="Error,Warning,Info,Debug" default="Info">Info</LogLevel>
  <Smtp>
    <Host>mail.example.test</Host>
    <Port default="25">25</Port>
  </Smtp>
</Settings>
"""
_SLAVE_ELEMENT = '  <IsSlave choices="True,False" default="False">True</IsSlave>\n'
_STORAGE_SERVER_SETTINGS = """<?xml version="1.0" encoding="utf-8"?>
<Settings>
  <ServerGuid>{guid}</ServerGuid>
  <ServerName>{name}</ServerName>
  <ServicePort default="443">{port}</ServicePort>
  <StoragePath>D:\\Attix5\\Storage</StoragePath>
  <MaxConcurrentBackups default="50">50</MaxConcurrentBackups>
</Settings>
"""


@dataclass(frozen=True)
class SeededHost:
    host: Host
    role: str  # the BackupServer role value


def platform_roles(config: Config) -> list[SeededHost]:
    """Each host's role in a healthy platform: the primary site holds the Master and StorageServers."""
    mirrors = {ss.mirror for site in config.sites.values() for ss in site.storage_servers if ss.mirror}
    roles: list[SeededHost] = []
    for site in config.sites.values():
        primary = site.name == config.primary_site
        roles.append(SeededHost(site.account_server, MASTER_ROLE if primary else config.db.slave_account_server_role))
        for ss in site.storage_servers:
            mirror = not primary and ss.name in mirrors
            roles.append(SeededHost(ss, MIRROR_ROLE if mirror else STORAGE_ROLE))
    return roles


def settings_xml(
    seeded: SeededHost, guid: str, master_role: str = MASTER_ROLE, database_connection: str | None = None
) -> bytes:
    """A Settings.xml like the samples: UTF-8 with BOM, CRLF line endings. An AccountServer's DatabaseConnection
    names its own site's StoragePlatform database (for SQLite: ``Driver=SQLite3;Database=<file>``), as the
    bot's database check compares it with the site's ODBC connection string."""
    host = seeded.host
    connection = database_connection or f"Server=sql-{host.site};Database=StoragePlatform;Trusted_Connection=True"
    values = {
        "guid": guid,
        "name": escape(host.name),
        "port": host.port,
        "site": escape(host.site),
        "database_connection": escape(connection),
    }
    if host.role == "account_server":
        slave = "" if seeded.role == master_role else _SLAVE_ELEMENT
        text = _ACCOUNT_SERVER_SETTINGS.format(is_slave=slave, **values)
    else:
        text = _STORAGE_SERVER_SETTINGS.format(**values)
    return (BOM + text.replace("\n", "\r\n")).encode("utf-8")


def seed(
    config: Config,
    states: dict[str, HostState],
    databases: list[StoragePlatformDatabase],
    connections: Mapping[str, str] | None = None,
) -> None:
    """Create the missing files, services, folders and BackupServer rows of a healthy platform
    (every site's database seeded alike; ``connections``: site → its database's connection string)."""
    for database in databases:
        database.ensure_table()
    account = config.redstor.account_server
    storage = config.redstor.storage_server
    for seeded in platform_roles(config):
        host = seeded.host
        state = states[host.name]
        state.root.mkdir(parents=True, exist_ok=True)
        is_account_server = host.role == "account_server"
        settings_path = config.windows_path(account.settings if is_account_server else storage.settings)
        local_settings = state.resolve(settings_path)
        if not local_settings.exists():
            local_settings.parent.mkdir(parents=True, exist_ok=True)
            connection = (connections or {}).get(host.site)
            local_settings.write_bytes(settings_xml(seeded, str(uuid.uuid4()), database_connection=connection))
        if is_account_server:
            state.resolve(config.windows_path(account.task_queue)).mkdir(parents=True, exist_ok=True)
        if not state.services_file.exists():
            service = account.service if is_account_server else storage.service
            state.services_file.write_text(json.dumps({service: "Running"}, indent=2) + "\n", encoding="utf-8")
        info = state.read_settings(settings_path)
        if info is not None and info.server_guid:
            row = BackupServerRow(info.server_guid, host.name, host.address, host.port, seeded.role, True)
            for database in databases:
                database.add_if_missing(row)
