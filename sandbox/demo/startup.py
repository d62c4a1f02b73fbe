"""The demo's start-up: free ports, a fresh output folder, its own environment and log file, the secured config."""

from __future__ import annotations

import errno
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from bot.config import Config, Host, load_config
from bot.errors import ConfigError
from sandbox.demo.cast import EXAMPLE_CONFIG, HTTPS_HOST, NTLM_HOST, WINRM_PASSWORD, WINRM_USER


class PortBusy(Exception):
    """One of the example platform's fixed loopback ports is taken."""

    def __init__(self, host: Host, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"port 127.0.0.1:{port} ({host.name}'s WinRM endpoint in the example platform) is already in use — "
            "another `failover-bot demo` or `failover-bot simulate` may be running; stop it and try again"
        )


def winrm_ports(config: Config) -> list[tuple[Host, str, int]]:
    """Every (host, address, port) the simulated platform will listen on."""
    out: list[tuple[Host, str, int]] = []
    for host in config.hosts():
        parts = urlsplit(host.winrm.url)
        out.append((host, parts.hostname or "127.0.0.1", parts.port or 80))
    return out


def check_ports(config: Config) -> None:
    """Raise PortBusy for the first of the platform's ports that something already listens on."""
    for host, address, port in winrm_ports(config):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise PortBusy(host, port) from None
                raise


def check_out(out: Path | None) -> Path | None:
    """The --out folder, resolved; a ConfigError unless it is new or empty (the demo starts a fresh platform there)."""
    if out is None:
        return None
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(str(out), "--out", "the demo needs a new or empty folder (it starts a fresh platform there)")
    return out


def make_out(out: Path | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="failover-bot-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _odbc_variables() -> list[str]:
    """The ODBC variables the example platform names (one per site)."""
    return load_config(EXAMPLE_CONFIG).odbc_envs()


@contextmanager
def demo_environment() -> Iterator[None]:
    """The demo's own values for what the rehearsal reads from the environment, restored afterwards."""
    forced = {
        "FAILOVER_WINRM_USER": WINRM_USER,
        "FAILOVER_WINRM_PASSWORD": WINRM_PASSWORD,
        **dict.fromkeys(_odbc_variables(), None),  # the rehearsal points them at the simulated databases
        "SLACK_APP_TOKEN": None,
    }
    no_proxy = "127.0.0.1,localhost"
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name)
        forced[name] = f"{current},{no_proxy}" if current else no_proxy
    from sandbox.rehearsal import environment

    with environment(forced):
        yield


@contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Send the bot's and the platform's logging to ``path`` instead of the terminal while the demo runs."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    for h in saved_handlers:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)


def secure_config(example: Path, path: Path, state_dir: Path) -> Path:
    """The example configuration with NTLM_HOST over NTLM (sealed messages) and HTTPS_HOST over HTTPS.

    The example file itself stays as it is (it must load unchanged); the demo runs this copy of it.
    """
    import yaml

    raw = yaml.safe_load(example.read_text(encoding="utf-8"))
    for site in raw["sites"].values():
        for host in [site["account_server"], *site.get("storage_servers", [])]:
            if host["name"] not in (NTLM_HOST, HTTPS_HOST):
                continue
            winrm = host["winrm"] if isinstance(host["winrm"], dict) else {"url": host["winrm"]}
            winrm["transport"] = "ntlm"
            if host["name"] == HTTPS_HOST:
                winrm["url"] = str(winrm["url"]).replace("http://", "https://", 1)
                winrm["server_cert_validation"] = "validate"
                winrm["ca_trust_path"] = str((state_dir / "tls" / "ca.pem").resolve())
            host["winrm"] = winrm
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path
