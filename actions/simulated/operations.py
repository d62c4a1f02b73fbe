"""The effect of each operation of actions/protocol.py on a simulated host, done in Python."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.simulated.host_state import HostState, PathRejected
from actions.simulated.storage_platform import StoragePlatformDatabase
from bot.config import Config, Host

PS_VERSION = "5.1.20348.2849"
_WILDCARD = re.compile(r"[*?\[\]]")
_INVALID_FILE_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


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


def target_of(op: str, data: dict[str, Any]) -> str:
    """What an operation acts on, for the operation log (known even when it fails)."""
    if op.startswith("service."):
        return str(data.get("service", ""))
    if op.startswith("file.") or op == "path.test":
        return str(data.get("path", ""))
    if op.startswith("taskqueue."):
        return _join(str(data.get("folder", "")), str(data.get("name", "")))
    return ""


def perform(ctx: HostContext, op: str, data: dict[str, Any]) -> Outcome:
    """Perform ``op`` with ``data`` on the host; OperationFailed with a message otherwise."""
    handler = _HANDLERS.get(op)
    if handler is None:
        raise OperationFailed(f"unknown operation {op!r}")
    try:
        return handler(ctx, data)
    except PathRejected as exc:
        raise OperationFailed(str(exc)) from exc
    except OSError as exc:
        # What .NET would report as an IOException / UnauthorizedAccessException.
        raise OperationFailed(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from exc


# --------------------------------------------------------------------------- helpers


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise OperationFailed(f"missing or invalid '{key}' in the operation data")
    return value


def _timeout(data: dict[str, Any]) -> float:
    value = data.get("timeout_s")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise OperationFailed("missing or invalid 'timeout_s' in the operation data")
    return float(value)


def _join(folder: str, name: str) -> str:
    return folder.rstrip("\\/") + "\\" + name if folder else name


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --------------------------------------------------------------------------- host.info


def _host_info(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    # $env:COMPUTERNAME is the NetBIOS name: upper case.
    return Outcome({"hostname": ctx.host.name.upper(), "ps_version": PS_VERSION})


# --------------------------------------------------------------------------- services


def _service(ctx: HostContext, data: dict[str, Any]) -> str:
    name = data.get("service")
    if not isinstance(name, str) or not name or _WILDCARD.search(name):
        raise OperationFailed(f"invalid service name '{name}': wildcard characters are not allowed")
    found = [s for s in ctx.state.services() if s.lower() == name.lower()]
    if len(found) != 1:
        raise OperationFailed(f"expected exactly one service named '{name}', found {len(found)}")
    return found[0]


def _wait_out_stuck(ctx: HostContext, service: str, timeout: float, verb: str) -> None:
    """While a fault holds ``service`` in a pending state, wait up to ``timeout`` then fail."""
    deadline = time.monotonic() + timeout
    while True:
        stuck = ctx.state.faults().stuck_state(service)
        if stuck is None:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.stopping.is_set():
            raise OperationFailed(f"service '{service}' did not {verb} within {timeout:g} s: stuck in {stuck}")
        ctx.stopping.wait(min(0.1, remaining))


def _service_query(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = _service(ctx, data)
    return Outcome({"service": name, "state": ctx.state.service_state(name)})


def _stop(ctx: HostContext, name: str, timeout: float) -> bool:
    if ctx.state.service_state(name) == "Stopped":
        return False
    _wait_out_stuck(ctx, name, timeout, "stop")
    ctx.state.set_service_state(name, "Stopped")
    return True


def _start(ctx: HostContext, name: str, timeout: float) -> bool:
    if ctx.state.service_state(name) == "Running":
        return False
    _wait_out_stuck(ctx, name, timeout, "start")
    ctx.state.set_service_state(name, "Running")
    if ctx.host.role == "account_server" and name.lower() == ctx.config.redstor.account_server.service.lower():
        _account_server_started(ctx)
    return True


def _account_server_started(ctx: HostContext) -> None:
    """A Master AccountServer whose row is the Slave's takes over the database (promoted Slave)."""
    settings_path = ctx.config.windows_path(ctx.config.redstor.account_server.settings)
    settings = ctx.state.read_settings(settings_path)
    if settings is not None and settings.is_slave:
        ctx.on_slave_started(ctx.host.name)
        return
    if settings is None or not settings.server_guid:
        return
    if ctx.database.promote_account_server(settings.server_guid):
        ctx.on_promoted(ctx.host.name, settings.server_guid)


def _service_stop(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = _service(ctx, data)
    changed = _stop(ctx, name, _timeout(data))
    return Outcome({"service": name, "state": ctx.state.service_state(name), "changed": changed}, changed)


def _service_start(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = _service(ctx, data)
    changed = _start(ctx, name, _timeout(data))
    return Outcome({"service": name, "state": ctx.state.service_state(name), "changed": changed}, changed)


def _service_restart(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = _service(ctx, data)
    timeout = _timeout(data)
    _stop(ctx, name, timeout)
    _start(ctx, name, timeout)
    return Outcome({"service": name, "state": ctx.state.service_state(name)}, True)


# --------------------------------------------------------------------------- files


def _file_read(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    local = ctx.state.resolve(_text(data, "path"))
    if not local.is_file():
        return Outcome({"exists": False, "content_b64": "", "sha256": ""})
    content = local.read_bytes()
    return Outcome(
        {"exists": True, "content_b64": base64.b64encode(content).decode("ascii"), "sha256": _sha256(content)}
    )


def _file_replace(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    path = _text(data, "path")
    backup = _text(data, "backup_path")
    wanted = _text(data, "sha256").lower()
    expected = _text(data, "expected_sha256").lower()
    try:
        content = base64.b64decode(data.get("content_b64", ""), validate=True)
    except (TypeError, ValueError) as exc:
        raise OperationFailed(f"content_b64 is not base64: {exc}") from exc
    local, local_backup = ctx.state.resolve(path), ctx.state.resolve(backup)
    with ctx.state.lock:
        if not local.is_file():
            raise OperationFailed(f"file not found: {path}")
        current = _sha256(local.read_bytes())
        if current == wanted:
            return Outcome({"path": path, "backup_path": None, "sha256": wanted, "changed": False}, False)
        if current != expected:
            raise OperationFailed(
                f"file {path} changed since it was read (sha256 is {current}, expected {expected}); nothing was written"
            )
        if local_backup.exists():
            raise OperationFailed(f"backup file already exists: {backup}")
        _swap_in(local, local_backup, content, wanted)
    return Outcome({"path": path, "backup_path": backup, "sha256": wanted, "changed": True}, True)


def _swap_in(local: Path, local_backup: Path, content: bytes, wanted: str) -> None:
    """Like [IO.File]::Replace: the temp file beside the target becomes it, the original the backup."""
    fd, tmp_name = tempfile.mkstemp(prefix=local.name + ".", suffix=".tmp", dir=local.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        written = _sha256(tmp.read_bytes())
        if written != wanted:
            raise OperationFailed(
                f"content check failed: written sha256 {written}, expected {wanted}; nothing was replaced"
            )
        try:
            os.link(local, local_backup)  # the original, byte for byte, under the backup name
        except PermissionError:
            shutil.copy2(local, local_backup)  # a file system without hard links
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)


def _path_test(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    local = ctx.state.resolve(_text(data, "path"))
    return Outcome({"exists": local.exists(), "is_dir": local.is_dir()})


# --------------------------------------------------------------------------- task queue


def _task_file(ctx: HostContext, data: dict[str, Any]) -> tuple[str, Path, Path]:
    folder = _text(data, "folder")
    name = data.get("name")
    if not isinstance(name, str) or not name or _INVALID_FILE_NAME.search(name):
        raise OperationFailed(f"invalid task file name '{name}'")
    local_folder = ctx.state.resolve(folder)
    return _join(folder, name), local_folder, ctx.state.resolve(_join(folder, name))


def _taskqueue_drop(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    path, local_folder, local = _task_file(ctx, data)
    if not local_folder.is_dir():
        raise OperationFailed(f"task queue folder not found: {_text(data, 'folder')}")
    try:
        with local.open("xb"):
            pass
    except FileExistsError:
        return Outcome({"path": path, "created": False, "already_waiting": True}, False)
    return Outcome({"path": path, "created": True, "already_waiting": False}, True)


def _taskqueue_status(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    _, local_folder, local = _task_file(ctx, data)
    exists = local_folder.is_dir()
    return Outcome({"folder_exists": exists, "waiting": exists and local.is_file()})


_HANDLERS: dict[str, Callable[[HostContext, dict[str, Any]], Outcome]] = {
    "host.info": _host_info,
    "service.query": _service_query,
    "service.stop": _service_stop,
    "service.start": _service_start,
    "service.restart": _service_restart,
    "file.read": _file_read,
    "file.replace": _file_replace,
    "path.test": _path_test,
    "taskqueue.drop": _taskqueue_drop,
    "taskqueue.status": _taskqueue_status,
}
