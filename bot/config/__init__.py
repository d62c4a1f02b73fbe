"""Loading and validating the YAML configuration; the only reader of ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from actions.hosts import (
    AccountServerPaths,
    DbColumns,
    Host,
    PlatformConfig,
    RedstorSettings,
    Site,
    StoragePlatformDbSettings,
    StorageServerPaths,
    WinRMCredentials,
    WinRMEndpoint,
    is_loopback,
)
from bot.config.schema import (
    ConfigModel,
    HostModel,
    ReadinessSettings,
    SlackSettings,
    WinRMDefaults,
    WinRMOverride,
)
from bot.errors import ConfigError, UsageError

# The platform's types live in actions.hosts (actions import nothing from bot); named here for the bot's readers.
__all__ = [
    "AccountServerPaths",
    "Config",
    "ConfigModel",
    "DbColumns",
    "Host",
    "RedstorSettings",
    "Site",
    "StorageServerPaths",
    "StoragePlatformDbSettings",
    "WinRMEndpoint",
    "config_path",
    "db_url",
    "env",
    "is_loopback",
    "load_config",
    "secret",
    "slack_api_risk",
]

DEFAULT_CONFIG_FILE = "failover.yml"
DEFAULT_DB_URL = "sqlite:///failover-bot.db"


# --------------------------------------------------------------------------- resolved view


def slack_api_risk(api_url: str | None) -> str | None:
    """Why ``api_url`` (SLACK_API_URL) is unsafe, or None: plain http to a non-loopback address."""
    if not api_url:
        return None
    parts = urlsplit(api_url)
    if parts.scheme.lower() == "http" and not is_loopback(parts.hostname or ""):
        return f"SLACK_API_URL {api_url} is plain http to a non-loopback address (the bot token travels in clear)"
    return None


@dataclass(frozen=True)
class Config(PlatformConfig):
    """The validated configuration: the platform as actions see it (hosts resolved with their WinRM defaults and
    credentials applied) and the bot's own settings."""

    path: str
    model: ConfigModel

    @property
    def platform(self) -> str:
        return self.model.platform

    @property
    def primary_site(self) -> str:
        return self.model.primary_site

    @property
    def slack(self) -> SlackSettings:
        return self.model.slack

    @property
    def readiness(self) -> ReadinessSettings:
        return self.model.readiness

    def audit_keys(self) -> tuple[str | None, dict[str, bytes]]:
        """The audit key new events use and every listed key by id, read from the environment (missing: absent)."""
        keys = {kid: secret(name).encode("utf-8") for kid, name in self.model.audit.keys.items() if secret(name)}
        return self.model.audit.key_id, keys

    def audit_key_problem(self) -> str | None:
        """Why the audit log is not keyed (None when it is)."""
        settings = self.model.audit
        if settings.key_id is None:
            return "the configuration names no audit key (audit: {key_id, keys})"
        if not secret(settings.keys[settings.key_id]):
            return f"{settings.keys[settings.key_id]} (audit key {settings.key_id!r}) is not set"
        return None

    @property
    def readiness_channel(self) -> str | None:
        """Where readiness announcements go: ``readiness.channel``, else the first of ``slack.channels``."""
        return self.readiness.channel or (self.slack.channels[0] if self.slack.channels else None)

    def odbc_envs(self) -> list[str]:
        """Each distinct variable naming a site's ODBC connection string, in site order."""
        names: list[str] = []
        for site in self.sites.values():
            if site.db.odbc_env not in names:
                names.append(site.db.odbc_env)
        return names

    def site(self, name: str) -> Site:
        """The site called ``name``; a UserError naming the known sites otherwise."""
        try:
            return self.sites[name]
        except KeyError:
            known = ", ".join(sorted(self.sites))
            raise UsageError(f"unknown site {name!r} (this platform has: {known})") from None

    def insecure_allowed(self) -> list[str]:
        """The insecure transports this configuration accepts with allow_insecure: true, to warn about at start."""
        out = []
        for h in self.hosts():
            out += [f"{h.name}: {risk} (allow_insecure: true)" for risk in h.winrm.transport_risks()]
        return out

    def check_slack_api_url(self, api_url: str | None) -> list[str]:
        """ConfigError for an insecure SLACK_API_URL unless slack.allow_insecure; else the warnings to log."""
        risk = slack_api_risk(api_url)
        if risk is None:
            return []
        if not self.slack.allow_insecure:
            raise ConfigError(self.path, "environment", f"{risk}; use https, or set slack.allow_insecure: true")
        return [f"{risk} (slack.allow_insecure: true)"]

    def required_env(self, *, slack: bool = False, winrm: bool = False, odbc: bool = False) -> list[str]:
        """Names of environment variables a command needs, in a stable order."""
        names: list[str] = []
        if slack and not os.environ.get("SLACK_APP_TOKEN"):
            names += ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
        elif slack:
            names += ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"]
        if winrm:
            for h in self.hosts():
                if h.winrm.transport in ("certificate", "kerberos"):
                    continue
                for n in (h.winrm.username_env, h.winrm.password_env):
                    if n not in names:
                        names.append(n)
        if odbc:
            names += [n for n in self.odbc_envs() if n not in names]
        return names

    def check_env(self, *, slack: bool = False, winrm: bool = False, odbc: bool = False) -> None:
        """Raise ConfigError naming every missing environment variable the command needs."""
        missing = [n for n in self.required_env(slack=slack, winrm=winrm, odbc=odbc) if not os.environ.get(n)]
        if missing:
            raise ConfigError(self.path, "environment", "missing environment variable(s): " + ", ".join(missing))


def secret(name: str) -> str:
    """The value of the environment variable ``name`` (a secret); empty string when unset."""
    return os.environ.get(name, "")


def env(name: str, default: str | None = None) -> str | None:
    """A non-secret environment setting."""
    return os.environ.get(name, default)


def db_url() -> str:
    return os.environ.get("FAILOVER_DB_URL") or DEFAULT_DB_URL


def config_path(cli_value: str | None) -> str:
    return cli_value or os.environ.get("FAILOVER_CONFIG") or DEFAULT_CONFIG_FILE


# --------------------------------------------------------------------------- loading


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "WinRMOverride") or str(part).startswith(("function-", "literal[")):
            continue  # pydantic's union-branch markers, not fields
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(path: str, exc: ValidationError) -> ConfigError:
    errors = exc.errors()
    # For a union (winrm: URL | mapping) prefer the branch the user evidently meant.
    err = errors[0]
    for e in errors:
        if e["type"] == "extra_forbidden":
            err = e
            break
    field = _loc(err["loc"])
    if err["type"] == "extra_forbidden":
        return ConfigError(path, field, "unknown field")
    if err["type"] == "missing":
        return ConfigError(path, field, "required field is missing")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return ConfigError(path, field, f"{msg} (got {err.get('input')!r})")


def _check_url(path: str, field: str, url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise ConfigError(path, field, f"not a WinRM URL ({exc}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, field, f"not a WinRM URL (want http(s)://host:port/wsman): {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(path, field, f"bad port in URL {url!r}") from None


def _endpoint(defaults: WinRMDefaults, raw: str | WinRMOverride) -> WinRMEndpoint:
    values = defaults.model_dump()
    if isinstance(raw, str):
        values["url"] = raw
    else:
        values.update({k: v for k, v in raw.model_dump().items() if v is not None})
    # Read once, here: the executor is handed these and never looks at the environment itself.
    credentials = WinRMCredentials(secret(values["username_env"]), secret(values["password_env"]))
    return WinRMEndpoint(**values, credentials=credentials)


def _resolve(path: str, model: ConfigModel) -> Config:
    if model.primary_site not in model.sites:
        raise ConfigError(
            path, "primary_site", f"{model.primary_site!r} names no site (have: {', '.join(model.sites)})"
        )
    seen_hosts: dict[str, str] = {}
    sites: dict[str, Site] = {}
    for sname, s in model.sites.items():
        base = f"sites.{sname}"
        if s.partner == sname:
            raise ConfigError(path, f"{base}.partner", f"{s.partner!r}: a site cannot be its own partner")
        if s.partner not in model.sites:
            raise ConfigError(path, f"{base}.partner", f"{s.partner!r} names no site (have: {', '.join(model.sites)})")
        if model.sites[s.partner].partner != sname:
            raise ConfigError(path, f"{base}.partner", f"{s.partner!r} does not name {sname!r} as its partner")
        entries: list[tuple[str, HostModel, str]] = [(f"{base}.account_server", s.account_server, "account_server")]
        entries += [(f"{base}.storage_servers[{i}]", ss, "storage_server") for i, ss in enumerate(s.storage_servers)]
        resolved: list[Host] = []
        for field, h, role in entries:
            if h.name in seen_hosts:
                raise ConfigError(
                    path, f"{field}.name", f"duplicate host name {h.name!r} (also at {seen_hosts[h.name]})"
                )
            seen_hosts[h.name] = field
            url = h.winrm if isinstance(h.winrm, str) else h.winrm.url
            _check_url(path, f"{field}.winrm" + ("" if isinstance(h.winrm, str) else ".url"), url)
            ep = _endpoint(model.winrm, h.winrm)
            if ep.operation_timeout_s >= ep.read_timeout_s:
                raise ConfigError(
                    path,
                    f"{field}.winrm",
                    f"operation_timeout_s ({ep.operation_timeout_s:g}) must be below read_timeout_s "
                    f"({ep.read_timeout_s:g})",
                )
            risks = ep.transport_risks()
            if risks and not ep.allow_insecure:
                raise ConfigError(
                    path,
                    f"{field}.winrm",
                    f"{h.name} ({url}): {risks[0]}; use https with validation and encryption, "
                    "or set allow_insecure: true in this host's winrm mapping",
                )
            mirror = getattr(h, "mirror", None)
            resolved.append(
                Host(
                    name=h.name,
                    site=sname,
                    role=role,  # type: ignore[arg-type]
                    address=h.address,
                    port=h.port,
                    winrm=ep,
                    mirror=mirror,
                    agent_dns_name=h.agent_dns_name,
                )
            )
        db = model.storage_platform_db
        if s.storage_platform_db is not None:
            db = db.model_copy(update={"odbc_env": s.storage_platform_db.odbc_env})
        sites[sname] = Site(
            sname, s.partner, resolved[0], tuple(resolved[1:]), db, odbc_connection_string=secret(db.odbc_env)
        )
    # mirrors must name a StorageServer of the partner site
    for sname, site in sites.items():
        partner = sites[site.partner]
        names = [ss.name for ss in partner.storage_servers]
        for i, ss in enumerate(site.storage_servers):
            if ss.mirror is not None and ss.mirror not in names:
                raise ConfigError(
                    path,
                    f"sites.{sname}.storage_servers[{i}].mirror",
                    f"{ss.mirror!r} names no StorageServer of {site.partner} (have: {', '.join(names) or 'none'})",
                )
    if model.winrm.operation_timeout_s >= model.winrm.read_timeout_s:
        raise ConfigError(
            path,
            "winrm.operation_timeout_s",
            f"{model.winrm.operation_timeout_s:g} must be below read_timeout_s ({model.winrm.read_timeout_s:g})",
        )
    if model.readiness.interval_s and not (model.readiness.channel or model.slack.channels):
        raise ConfigError(
            path,
            "readiness.channel",
            "readiness rounds need a channel to announce in: set readiness.channel or slack.channels, "
            "or turn the rounds off with readiness.interval_s: 0",
        )
    return Config(sites=sites, redstor=model.redstor, db=model.storage_platform_db, path=path, model=model)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load, validate and resolve the configuration at ``path``; ConfigError on any problem."""
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(p, "", "configuration file not found (use --config or FAILOVER_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(p, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(p, "", "must be a YAML mapping at the top level")
    try:
        model = ConfigModel.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(p, exc) from None
    return _resolve(p, model)
