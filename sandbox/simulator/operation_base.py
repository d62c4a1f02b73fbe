"""What every operation on a simulated host shares: the host's context, the outcome, the failure, the data checks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.config import Config, Host
from sandbox.simulator.host_state import HostState
from sandbox.simulator.storage_platform import StoragePlatformDatabase


class OperationFailed(Exception):
    """The operation ran and failed; the message is what the PowerShell template would report."""


@dataclass
class Outcome:
    result: dict[str, Any]
    changed: bool | None = None


@dataclass
class HostContext:
    """Everything an operation may touch on one host."""

    host: Host
    state: HostState
    config: Config
    database: StoragePlatformDatabase
    stopping: threading.Event
    on_promoted: Callable[[str, str], None]  # (host name, guid) after a BackupServer role swap
    on_slave_started: Callable[[str], None] = lambda host: None  # a Slave replicates the Master's database


def text_of(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise OperationFailed(f"missing or invalid '{key}' in the operation data")
    return value


def timeout_of(data: dict[str, Any]) -> float:
    value = data.get("timeout_s")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise OperationFailed("missing or invalid 'timeout_s' in the operation data")
    return float(value)


def join(folder: str, name: str) -> str:
    return folder.rstrip("\\/") + "\\" + name if folder else name
