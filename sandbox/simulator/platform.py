"""The simulated platform as a whole: seeds state, serves every host's WinRM endpoint, runs the ASes."""

from __future__ import annotations

import ipaddress
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import urlsplit

from actions import protocol
from bot.config import Config, Host, secret
from bot.errors import ConfigError
from sandbox.simulator.account_server import AccountServerModel, run_account_servers
from sandbox.simulator.endpoint import Credentials, EndpointServer, Route
from sandbox.simulator.host_state import HostState
from sandbox.simulator.operation_base import HostContext
from sandbox.simulator.oplog import OperationLog
from sandbox.simulator.powershell import CLM_MESSAGE, ProcessResult, check_command_line, rejected, run_script
from sandbox.simulator.security import SimulatedCA, use_user_file, write_user_file
from sandbox.simulator.seeding import seed
from sandbox.simulator.storage_platform import StoragePlatformDatabase, site_databases
from sandbox.simulator.wsman import WSManService

JOIN_DEADLINE_S = 10.0
SERVED_TRANSPORTS = ("basic", "ntlm")


class HostRuntime:
    """One host as its WS-Man service sees it: launches powershell.exe and runs operation scripts."""

    def __init__(self, context: HostContext, log: OperationLog) -> None:
        self.name = context.host.name
        self.context = context
        self.log = log

    def launch(self, command: str, arguments: str) -> ProcessResult | bytes | None:
        problem = check_command_line(command, arguments)
        if problem is None:
            inline = protocol.inline_script(arguments)
            if inline is not None:
                return inline.encode("utf-8")
            if self.context.state.faults().constrained_language:
                # The stdin bootstrap needs [Console]::In and [ScriptBlock]::Create: both refused.
                problem = CLM_MESSAGE
                self.log.record(self.name, "command.rejected", command, "failed", error=problem)
                return rejected(problem)
            return None
        self.log.record(self.name, "command.rejected", command, "failed", error=problem)
        return rejected(problem)

    def run(self, stdin: bytes) -> ProcessResult:
        return run_script(self.context, self.log, stdin)

    def take_timeout_fault(self) -> bool:
        return self.context.state.take_timeout_fault()

    def max_envelope_kb(self) -> int:
        return self.context.state.faults().max_envelope_size_kb


class _Workers:
    """Background threads the platform started, so stop() can join them with a deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def spawn(self, target: Callable[[], None], name: str = "simulated-command") -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def join(self, deadline: float) -> None:
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class SimulatedPlatform:
    """Every configured host served over WinRM from ``state_dir``; use as a context manager."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.state_dir = Path(state_dir).resolve()
        self.log = OperationLog(self.state_dir)
        self.databases = site_databases(config, self.state_dir)  # site name → its AccountServer's database
        self.states = {h.name: HostState(self.state_dir, h.name) for h in config.hosts()}
        self._stopping = threading.Event()
        self._workers = _Workers()
        self._servers: list[EndpointServer] = []
        self._test_ca: SimulatedCA | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SimulatedPlatform:
        """Seed what is missing, bind every endpoint and serve in background threads."""
        if self._started:
            return self
        credentials = self._credentials()
        listeners = self._listeners()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ntlm_users(credentials)
        connections = {site: db.odbc_connection_string() for site, db in self.databases.items()}
        seed(self.config, self.states, self.distinct_databases(), connections)
        self._stopping.clear()
        try:
            for address, routes in listeners.items():
                self._servers.append(self._bind(address, routes, credentials))
        except BaseException:
            self._close_servers()
            raise
        for server in self._servers:
            host, port = server.server_address[:2]
            name = f"wsman-{host!s}:{port}"
            self._workers.spawn(partial(server.serve_forever, poll_interval=0.1), name=name)
        models = [
            AccountServerModel(site.account_server, self.states[site.account_server.name], self.config, self.log)
            for site in self.config.sites.values()
        ]
        self._workers.spawn(lambda: run_account_servers(models, self._stopping), name="account-servers")
        self._started = True
        return self

    def stop(self) -> None:
        """Stop serving, wake every waiting request and join all threads (with a deadline)."""
        self._stopping.set()
        stoppers = [threading.Thread(target=server.shutdown, daemon=True) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(JOIN_DEADLINE_S)
        self._close_servers()
        self._workers.join(time.monotonic() + JOIN_DEADLINE_S)
        self._started = False

    def __enter__(self) -> SimulatedPlatform:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ what users of the platform need

    def distinct_databases(self) -> list[StoragePlatformDatabase]:
        out: list[StoragePlatformDatabase] = []
        for db in self.databases.values():
            if db not in out:
                out.append(db)
        return out

    def database(self, site: str) -> StoragePlatformDatabase:
        """The StoragePlatform database of ``site``'s AccountServer."""
        return self.databases[site]

    def odbc_env(self) -> dict[str, str]:
        """Each ODBC variable the configuration names → the connection string of that database."""
        return {db.settings.odbc_env: db.odbc_connection_string() for db in self.distinct_databases()}

    @property
    def operations_path(self) -> Path:
        return self.log.path

    def env_lines(self) -> list[str]:
        """Environment lines the bot needs to reach this platform (never a password)."""
        return [f"{name}={value}" for name, value in self.odbc_env().items()]

    def connections(self, name: str) -> int:
        """TCP connections accepted so far on the endpoint that serves host ``name`` (shared by its routes)."""
        path = (urlsplit(self.config.host(name).winrm.url).path.rstrip("/").lower()) or "/wsman"
        port = urlsplit(self.config.host(name).winrm.url).port
        for server in self._servers:
            if server.server_address[1] == port and path in server.routes:
                return server.accepted
        raise KeyError(name)

    def host_dir(self, name: str) -> Path:
        """``DIR/<host name>``: the host's files, services.json and faults.json."""
        return self.states[name].root

    # ------------------------------------------------------------------ internals

    def _credentials(self) -> dict[str, Credentials]:
        missing: list[str] = []
        for host in self.config.hosts():
            for name in (host.winrm.username_env, host.winrm.password_env):
                if not secret(name) and name not in missing:
                    missing.append(name)
        if missing:
            raise ConfigError(
                self.config.path,
                "environment",
                "the simulated platform checks WinRM credentials against missing environment variable(s): "
                + ", ".join(missing),
            )
        return {
            h.name: Credentials(secret(h.winrm.username_env), secret(h.winrm.password_env)) for h in self.config.hosts()
        }

    def _listeners(self) -> dict[tuple[str, int], dict[str, Host]]:
        fields = _winrm_fields(self.config)
        listeners: dict[tuple[str, int], dict[str, Host]] = {}
        schemes: dict[tuple[str, int], str] = {}
        for host in self.config.hosts():
            parts = urlsplit(host.winrm.url)
            if parts.scheme not in ("http", "https"):
                raise ConfigError(self.config.path, fields[host.name], "the simulated platform serves http(s):// only")
            if host.winrm.transport not in SERVED_TRANSPORTS:
                raise ConfigError(
                    self.config.path,
                    fields[host.name],
                    f"the simulated platform accepts transport {' or '.join(SERVED_TRANSPORTS)}, "
                    f"not {host.winrm.transport!r}",
                )
            hostname = parts.hostname or ""
            if not _is_loopback(hostname):
                raise ConfigError(
                    self.config.path, fields[host.name], f"the simulated platform binds loopback only, not {hostname!r}"
                )
            address = (hostname, parts.port or 80)
            if schemes.setdefault(address, parts.scheme) != parts.scheme:
                raise ConfigError(
                    self.config.path, fields[host.name], f"{hostname}:{address[1]} cannot serve both http and https"
                )
            path = parts.path.rstrip("/").lower() or "/wsman"
            listeners.setdefault(address, {})[path] = host
        return listeners

    def _bind(
        self, address: tuple[str, int], hosts: dict[str, Host], credentials: dict[str, Credentials]
    ) -> EndpointServer:
        routes: dict[str, Route] = {}
        for path, host in hosts.items():
            context = HostContext(
                host=host,
                state=self.states[host.name],
                config=self.config,
                database=self.databases[host.site],
                stopping=self._stopping,
                on_promoted=self._record_promotion,
                on_slave_started=self._replicate_to_slave,
            )
            runtime = HostRuntime(context, self.log)
            wsman = WSManService(runtime, self._workers.spawn, self._stopping, machine=host.name)
            plain_http = host.winrm.url.lower().startswith("http:")
            routes[path] = Route(
                self.states[host.name],
                credentials[host.name],
                wsman,
                transport=host.winrm.transport,
                encrypted=host.winrm.transport == "ntlm" and plain_http,
            )
        tls = None
        if next(iter(hosts.values())).winrm.url.lower().startswith("https:"):
            tls = self._ca().server_context(address[0], self.state_dir / "tls")
        try:
            return EndpointServer(address, routes, self._stopping, tls)
        except OSError as exc:
            host = next(iter(hosts.values()))
            raise ConfigError(
                self.config.path,
                _winrm_fields(self.config)[host.name],
                f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}",
            ) from None

    @property
    def ca_path(self) -> Path:
        """The test CA's certificate (PEM): ``ca_trust_path`` for hosts served over https://."""
        return self.state_dir / "tls" / "ca.pem"

    def _ca(self) -> SimulatedCA:
        if self._test_ca is None:
            self._test_ca = SimulatedCA.load_or_create(self.ca_path.parent)
        return self._test_ca

    def _ntlm_users(self, credentials: dict[str, Credentials]) -> None:
        users: dict[str, str] = {}
        for host in self.config.hosts():
            if host.winrm.transport == "ntlm":
                c = credentials[host.name]
                if users.setdefault(c.username.lower(), c.password) != c.password:
                    raise ConfigError(
                        self.config.path, "winrm", f"NTLM user {c.username!r} has two passwords in this platform"
                    )
        if users:
            use_user_file(write_user_file(self.state_dir / "ntlm_users", users))

    def _record_promotion(self, host: str, guid: str) -> None:
        table = self.config.db.table
        self.log.record(host, "backupserver.promote", f"{table} {guid}", "ok", changed=True)

    def _replicate_to_slave(self, host: str) -> None:
        """A Slave AccountServer that starts while a Master runs copies the Master's database (its own is
        a replica); with one shared database there is nothing to copy."""
        slave = self.config.host(host)
        account = self.config.redstor.account_server
        settings_path = self.config.windows_path(account.settings)
        for site in self.config.sites.values():
            master = site.account_server
            if master.name == host or self.databases[master.site] is self.databases[slave.site]:
                continue
            state = self.states[master.name]
            settings = state.read_settings(settings_path)
            if settings is None or settings.is_slave or state.service_state(account.service) != "Running":
                continue
            if self.databases[slave.site].replace_rows_with(self.databases[master.site]):
                self.log.record(
                    host, "backupserver.replicate", f"{self.config.db.table} from {master.name}", "ok", changed=True
                )
            return

    def _close_servers(self) -> None:
        for server in self._servers:
            server.server_close()
        self._servers = []


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _winrm_fields(config: Config) -> dict[str, str]:
    """Each host's configuration field path of its winrm URL, for error messages."""
    fields: dict[str, str] = {}
    for name, site in config.model.sites.items():
        fields[site.account_server.name] = f"sites.{name}.account_server.winrm"
        for i, ss in enumerate(site.storage_servers):
            fields[ss.name] = f"sites.{name}.storage_servers[{i}].winrm"
    return fields


def serve_forever(config: Config, state_dir: Path, out: TextIO | None = None) -> int:
    """``failover-bot simulate``: print the environment lines, serve until SIGINT or SIGTERM."""
    out = out or sys.stdout
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        with SimulatedPlatform(config, state_dir) as platform:
            for line in platform.env_lines():
                print(line, file=out)
            for host in config.hosts():
                print(f"# {host.name}: {host.winrm.url}", file=out)
            print(f"# state: {platform.state_dir}", file=out, flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
