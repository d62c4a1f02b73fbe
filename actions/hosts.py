"""What actions know of the platform: its sites and hosts, how to reach them (credentials resolved), Redstor's paths.

``bot.config`` reads the YAML and the environment once and builds these; actions only read them. The
credentials (WinRM user and password, the ODBC connection strings) arrive resolved, and no ``repr`` shows them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- Redstor and the database (YAML)


class AccountServerPaths(_Strict):
    service: str = "Attix5ProAccountServer"
    settings: str = r"AS_Service\Settings.xml"
    task_queue: str = r"AS_Service\TaskQueue"
    # how long the bot waits for the AccountServer to consume a task file it dropped (it deletes it when done)
    task_queue_timeout_s: float = Field(default=120, ge=1, le=3600)


class StorageServerPaths(_Strict):
    service: str = "Attix5ProStorageServer"
    settings: str = r"SS_Service\Settings.xml"


class RedstorSettings(_Strict):
    data_root: str = r"C:\ProgramData\Attix5 Pro"
    account_server: AccountServerPaths = Field(default_factory=AccountServerPaths)
    storage_server: StorageServerPaths = Field(default_factory=StorageServerPaths)


class DbColumns(_Strict):
    guid: str = "ServerGUID"
    ip: str = "IP"
    online: str = "OnLine"
    role: str = "Role"


class StoragePlatformDbSettings(_Strict):
    odbc_env: str = "FAILOVER_ODBC"
    table: str = "BackupServer"
    columns: DbColumns = Field(default_factory=DbColumns)
    slave_account_server_role: str = "SlaveAccountServer"


# --------------------------------------------------------------------------- hosts


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine: localhost, 127.0.0.0/8 or ::1."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WinRMCredentials:
    """A WinRM user name and password as the configuration resolved them ("" when unset); repr hides the password."""

    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class WinRMEndpoint:
    """Everything needed to open a WinRM connection to one host; the credentials resolved from the variables named."""

    url: str
    transport: str
    username_env: str
    password_env: str
    cert_pem: str | None
    cert_key_pem: str | None
    server_cert_validation: str
    ca_trust_path: str | None
    message_encryption: str
    operation_timeout_s: int
    read_timeout_s: int
    command_timeout_s: int
    allow_insecure: bool = False
    credentials: WinRMCredentials = WinRMCredentials()

    def transport_risks(self) -> list[str]:
        """What exposes this endpoint's credentials or traffic; nothing for a loopback address."""
        if is_loopback(urlsplit(self.url).hostname or ""):
            return []
        risks = []
        if self.transport == "basic" and self.url.lower().startswith("http:"):
            risks.append("transport basic over http sends the password in clear")
        if self.server_cert_validation == "ignore":
            risks.append("server_cert_validation: ignore accepts any certificate")
        if self.message_encryption == "never":
            risks.append("message_encryption: never sends commands and output unencrypted")
        return risks


@dataclass(frozen=True)
class Host:
    """One Windows server of the platform."""

    name: str
    site: str
    role: Literal["account_server", "storage_server"]
    address: str
    port: int
    winrm: WinRMEndpoint
    mirror: str | None = None  # StorageServers: the partner site's MirrorServer name
    agent_dns_name: str | None = None

    @property
    def endpoint(self) -> str:
        """address:port as the Console shows it."""
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Site:
    name: str
    partner: str
    account_server: Host
    storage_servers: tuple[Host, ...]
    db: StoragePlatformDbSettings  # the database this site's AccountServer uses
    odbc_connection_string: str = field(default="", repr=False)  # read from db.odbc_env by the configuration

    def storage_server(self, name: str) -> Host:
        for ss in self.storage_servers:
            if ss.name == name:
                return ss
        raise KeyError(name)


# --------------------------------------------------------------------------- the platform


@dataclass(frozen=True)
class PlatformConfig:
    """The platform as actions see it: sites with their hosts and databases, Redstor's paths, the database layout."""

    sites: Mapping[str, Site]
    redstor: RedstorSettings
    db: StoragePlatformDbSettings  # the top-level StoragePlatform database settings (table, columns, variable)

    def site(self, name: str) -> Site:
        """The site called ``name``; KeyError otherwise (the bot's configuration says it to the person)."""
        return self.sites[name]

    def hosts(self) -> list[Host]:
        out: list[Host] = []
        for site in self.sites.values():
            out.append(site.account_server)
            out.extend(site.storage_servers)
        return out

    def host(self, name: str) -> Host:
        for h in self.hosts():
            if h.name == name:
                return h
        raise KeyError(name)

    def windows_path(self, relative: str) -> str:
        """A path under the Redstor data root, as Windows spells it."""
        root = self.redstor.data_root.rstrip("\\")
        return f"{root}\\{relative.lstrip(chr(92))}"

    def db_of(self, site: str) -> StoragePlatformDbSettings:
        """The StoragePlatform database of ``site``'s AccountServer."""
        return self.sites[site].db
