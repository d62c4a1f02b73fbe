"""A copy of the example platform on free loopback ports, and the simulated platform running it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bot.config import load_config
from sandbox.simulator import SimulatedPlatform
from tests.support.paths import EXAMPLE_CONFIG

TEST_WINRM_USER = "simulated-admin"
TEST_WINRM_PASSWORD = "simulated-password-not-secret"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Hosts served as on a domain network when write_config(secure_state=...) asks for it.
NTLM_HOST = "as-b"  # NTLM over plain HTTP: every message sealed (WinRM message encryption)
HTTPS_HOST = "ms-b1"  # NTLM over HTTPS, the certificate validated against the platform's test CA


def write_config(directory: Path, *, secure_state: Path | None = None, **overrides: Any) -> Path:
    """Write the example platform's configuration with every winrm URL on a free loopback port.

    ``overrides`` are merged into the top level (mappings deeply, e.g. ``winrm={"command_timeout_s": 5}``).
    With ``secure_state`` (the state folder the platform will run on), NTLM_HOST speaks NTLM with message
    encryption and HTTPS_HOST NTLM over HTTPS validated against ``<secure_state>/tls/ca.pem``.
    """
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    used: set[int] = set()
    for site in raw["sites"].values():
        for host in [site["account_server"], *site.get("storage_servers", [])]:
            port = free_port()
            while port in used:
                port = free_port()
            used.add(port)
            url = f"http://127.0.0.1:{port}/wsman"
            if isinstance(host["winrm"], dict):
                host["winrm"]["url"] = url  # keep the mapping form (ms-b2's per-host overrides)
            else:
                host["winrm"] = url
            if secure_state is not None and host["name"] in (NTLM_HOST, HTTPS_HOST):
                winrm = host["winrm"] if isinstance(host["winrm"], dict) else {"url": url}
                winrm["transport"] = "ntlm"
                if host["name"] == HTTPS_HOST:
                    winrm["url"] = url.replace("http://", "https://")
                    winrm["server_cert_validation"] = "validate"
                    winrm["ca_trust_path"] = str(Path(secure_state).resolve() / "tls" / "ca.pem")
                host["winrm"] = winrm
    raw = _merge(raw, overrides)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "failover.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def running_platform(config_path: Path, state_dir: Path) -> Iterator[SimulatedPlatform]:
    """The simulated platform of ``config_path`` started over ``state_dir``; stopped on exit.

    Sets test WinRM credentials (and the ODBC variable the configuration names) in ``os.environ``
    when absent, and restores the environment afterwards.
    """
    config = load_config(config_path)
    platform = SimulatedPlatform(config, state_dir)
    defaults = {
        "FAILOVER_WINRM_USER": TEST_WINRM_USER,
        "FAILOVER_WINRM_PASSWORD": TEST_WINRM_PASSWORD,
        **platform.odbc_env(),
    }
    added = [name for name in defaults if name not in os.environ]
    for name in added:
        os.environ[name] = defaults[name]
    try:
        # The configuration resolves credentials when it is loaded: load it again, now that they are set.
        platform = SimulatedPlatform(load_config(config_path), state_dir)
        with platform:
            yield platform
    finally:
        for name in added:
            os.environ.pop(name, None)
