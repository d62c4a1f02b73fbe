"""Typed wrappers of the remote operations, the only way runbook actions talk to a Windows host."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from actions.errors import RemoteOperationFailed
from actions.hosts import Host

TASK_FILE = "Failover.UpdateSettingsOnSS"
# Beyond a service's own timeout the script needs a moment to report where the service got stuck.
SERVICE_MARGIN_S = 15.0


class Executor(Protocol):
    """What the wrappers need from an executor (WinRMExecutor or a test double)."""

    def run(self, host: Host, op: str, data: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    ps_version: str
    language_mode: str = "FullLanguage"  # ConstrainedLanguage under AppLocker/WDAC: the bot cannot work
    execution_policies: tuple[tuple[str, str], ...] = ()  # (scope, policy) as Get-ExecutionPolicy -List


@dataclass(frozen=True)
class PreflightInfo:
    """What host.preflight reports, having travelled the stdin route."""

    language_mode: str
    execution_policies: tuple[tuple[str, str], ...]
    max_envelope_size_kb: int | None  # None: unknown (the WSMan: drive answers administrators only)
    settings_size: int | None  # None: no such file
    service: str
    start_type: str
    account: str | None
    dependents: tuple[tuple[str, str], ...]  # (name, state)


@dataclass(frozen=True)
class ServiceResult:
    state: str
    changed: bool


@dataclass(frozen=True)
class FileContent:
    exists: bool
    content: bytes
    sha256: str


@dataclass(frozen=True)
class ReplaceResult:
    changed: bool
    backup_path: str | None


@dataclass(frozen=True)
class TaskDrop:
    created: bool
    already_waiting: bool
    path: str


@dataclass(frozen=True)
class TaskQueueStatus:
    folder_exists: bool
    waiting: bool


def _get(host: Host, op: str, result: dict[str, Any], name: str, kind: type) -> Any:
    value = result.get(name)
    if not isinstance(value, kind):
        raise RemoteOperationFailed(f"{op}: malformed result, {name!r} is {value!r}", host=host.name)
    return value


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def backup_path_for(path: str, now: datetime | None = None) -> str:
    """``<path>.<UTC yyyymmddTHHMMSS.mmmZ>.bak`` beside the original (milliseconds: two edits of one
    file within a second, as in a fast failback, must not collide)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{path}.{moment.strftime('%Y%m%dT%H%M%S')}.{moment.microsecond // 1000:03d}Z.bak"


def host_info(ex: Executor, host: Host) -> HostInfo:
    r = ex.run(host, "host.info", {})
    return HostInfo(
        _get(host, "host.info", r, "hostname", str),
        _get(host, "host.info", r, "ps_version", str),
        str(r.get("language_mode") or "FullLanguage"),
        _pairs(r.get("execution_policies"), "scope", "policy"),
    )


def _pairs(value: Any, first: str, second: str) -> tuple[tuple[str, str], ...]:
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return tuple((str(i.get(first)), str(i.get(second))) for i in items if isinstance(i, dict))


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def preflight(ex: Executor, host: Host, service: str, settings_path: str) -> PreflightInfo:
    """The no-op that travels over stdin and reports what would block the bot on ``host``."""
    r = ex.run(host, "host.preflight", {"service": service, "settings_path": settings_path})
    account = r.get("account")
    return PreflightInfo(
        language_mode=_get(host, "host.preflight", r, "language_mode", str),
        execution_policies=_pairs(r.get("execution_policies"), "scope", "policy"),
        max_envelope_size_kb=_optional_int(r.get("max_envelope_size_kb")),
        settings_size=_optional_int(r.get("settings_size")),
        service=_get(host, "host.preflight", r, "service", str),
        start_type=_get(host, "host.preflight", r, "start_type", str),
        account=account if isinstance(account, str) and account else None,
        dependents=_pairs(r.get("dependents"), "name", "state"),
    )


def query_service(ex: Executor, host: Host, service: str) -> str:
    """The service's state by Windows' name (Running, Stopped, StartPending, StopPending, Paused)."""
    return _get(host, "service.query", ex.run(host, "service.query", {"service": service}), "state", str)


def _service_change(ex: Executor, host: Host, op: str, service: str, timeout_s: float, waits: int) -> dict[str, Any]:
    return ex.run(
        host, op, {"service": service, "timeout_s": timeout_s}, timeout_s=waits * timeout_s + SERVICE_MARGIN_S
    )


def stop_service(ex: Executor, host: Host, service: str, timeout_s: float) -> ServiceResult:
    r = _service_change(ex, host, "service.stop", service, timeout_s, 1)
    return ServiceResult(_get(host, "service.stop", r, "state", str), _get(host, "service.stop", r, "changed", bool))


def start_service(ex: Executor, host: Host, service: str, timeout_s: float) -> ServiceResult:
    r = _service_change(ex, host, "service.start", service, timeout_s, 1)
    return ServiceResult(_get(host, "service.start", r, "state", str), _get(host, "service.start", r, "changed", bool))


def restart_service(ex: Executor, host: Host, service: str, timeout_s: float) -> ServiceResult:
    """Stop (if needed) then start; always a change."""
    r = _service_change(ex, host, "service.restart", service, timeout_s, 2)
    return ServiceResult(_get(host, "service.restart", r, "state", str), True)


def read_file(ex: Executor, host: Host, path: str) -> FileContent:
    """The file's exact bytes and SHA-256; ``exists`` false (empty content) when there is no such file."""
    r = ex.run(host, "file.read", {"path": path})
    if not _get(host, "file.read", r, "exists", bool):
        return FileContent(False, b"", "")
    try:
        content = base64.b64decode(_get(host, "file.read", r, "content_b64", str), validate=True)
    except ValueError as exc:  # binascii.Error, or characters outside ASCII
        raise RemoteOperationFailed(f"file.read: content is not base64: {exc}", host=host.name) from exc
    digest = _get(host, "file.read", r, "sha256", str).lower()
    if digest != sha256_hex(content):
        raise RemoteOperationFailed(f"file.read: {path} arrived damaged (SHA-256 mismatch)", host=host.name)
    return FileContent(True, content, digest)


def replace_file(
    ex: Executor, host: Host, path: str, new: bytes, expected_sha256: str, *, now: datetime | None = None
) -> ReplaceResult:
    """Atomically replace ``path`` with ``new`` if it still has ``expected_sha256``; keeps a timestamped backup."""
    r = ex.run(
        host,
        "file.replace",
        {
            "path": path,
            "content_b64": base64.b64encode(new).decode("ascii"),
            "sha256": sha256_hex(new),
            "expected_sha256": expected_sha256.lower(),
            "backup_path": backup_path_for(path, now),
        },
    )
    changed = _get(host, "file.replace", r, "changed", bool)
    backup = r.get("backup_path") if changed else None
    return ReplaceResult(changed, backup if isinstance(backup, str) and backup else None)


def path_exists(ex: Executor, host: Host, path: str) -> tuple[bool, bool]:
    """(exists, is a folder)."""
    r = ex.run(host, "path.test", {"path": path})
    return _get(host, "path.test", r, "exists", bool), _get(host, "path.test", r, "is_dir", bool)


def drop_task_file(ex: Executor, host: Host, folder: str, name: str = TASK_FILE) -> TaskDrop:
    """Create the empty task file; an unconsumed one already there is reported, not overwritten."""
    r = ex.run(host, "taskqueue.drop", {"folder": folder, "name": name})
    return TaskDrop(
        _get(host, "taskqueue.drop", r, "created", bool),
        _get(host, "taskqueue.drop", r, "already_waiting", bool),
        _get(host, "taskqueue.drop", r, "path", str),
    )


def task_queue_status(ex: Executor, host: Host, folder: str, name: str = TASK_FILE) -> TaskQueueStatus:
    r = ex.run(host, "taskqueue.status", {"folder": folder, "name": name})
    return TaskQueueStatus(
        _get(host, "taskqueue.status", r, "folder_exists", bool), _get(host, "taskqueue.status", r, "waiting", bool)
    )


def task_file_waiting(ex: Executor, host: Host, folder: str, name: str = TASK_FILE) -> bool:
    """Whether the task file is still waiting to be consumed; RemoteOperationFailed if the folder is missing."""
    status = task_queue_status(ex, host, folder, name)
    if not status.folder_exists:
        raise RemoteOperationFailed(f"task queue folder not found: {folder}", host=host.name)
    return status.waiting
