"""The effect of each operation of actions/protocol.py on a simulated host, done in Python."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.simulator.host_state import PathRejected
from sandbox.simulator.operation_base import HostContext, OperationFailed, Outcome, join, text_of
from sandbox.simulator.services import service_named, service_query, service_restart, service_start, service_stop

PS_VERSION = "5.1.20348.2849"
_INVALID_FILE_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


def target_of(op: str, data: dict[str, Any]) -> str:
    """What an operation acts on, for the operation log (known even when it fails)."""
    if op.startswith("service."):
        return str(data.get("service", ""))
    if op.startswith("file.") or op == "path.test":
        return str(data.get("path", ""))
    if op.startswith("taskqueue."):
        return join(str(data.get("folder", "")), str(data.get("name", "")))
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


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --------------------------------------------------------------------------- paths as the templates check them

_ABSOLUTE = re.compile(r"\A[A-Za-z]:\\")
_NOT_FULL = re.compile(r"(?:\\\\|/|\\\.{1,2}(?:\\|\Z)|[ .](?:\\|\Z))")
_WIN32_MESSAGES = {
    3: "Could not find a part of the path.",
    32: "The process cannot access the file because it is being used by another process.",
    1175: "Unable to remove the file to be replaced.",
    1176: "Unable to move the replacement file to the file to be replaced. "
    "The file to be replaced has retained its original name.",
    1177: "Unable to move the replacement file to the file to be replaced. "
    "The file to be replaced has been renamed using the backup name.",
}
REPLACE_ATTEMPTS = 5
RETRIED_ERRORS = frozenset({1175, 1176, 1177, 32, 33})


def _absolute(path: str) -> str:
    """Assert-AbsolutePath: a drive-letter path equal to its GetFullPath (no C:foo, \\foo, UNC, '..', '/')."""
    tail = path[3:]
    if not _ABSOLUTE.match(path) or _NOT_FULL.search("\\" + tail) or tail.startswith("\\"):
        raise OperationFailed(f"not an absolute path: '{path}'")
    return path


def _kind(ctx: HostContext, path: str) -> str:
    """Get-PathKind: 'missing', 'file' or 'folder'; access denied is an error, never 'missing'."""
    if ctx.state.faults().is_denied(path):
        raise OperationFailed(f"access denied: {path}: Access to the path '{path}' is denied.")
    local = ctx.state.resolve(path)
    if local.is_dir():
        return "folder"
    return "file" if local.exists() else "missing"


def _method_error(method: str, arguments: int, code: int, message: str | None = None) -> str:
    """Get-ErrorChain of a failed .NET call as PowerShell wraps it."""
    text = message or _WIN32_MESSAGES.get(code, f"Win32 error {code}")
    return f'Exception calling "{method}" with "{arguments}" argument(s): "{text}" <- {text} (Win32 error {code})'


# --------------------------------------------------------------------------- host.info


def _powershell(ctx: HostContext) -> dict[str, Any]:
    faults = ctx.state.faults()
    policies = {"MachinePolicy": "Undefined", "UserPolicy": "Undefined", "Process": "Bypass"}
    policies.update({"CurrentUser": "Undefined", "LocalMachine": "RemoteSigned"})
    policies.update(faults.execution_policies)
    return {
        "language_mode": "ConstrainedLanguage" if faults.constrained_language else "FullLanguage",
        "execution_policies": [{"scope": scope, "policy": policy} for scope, policy in policies.items()],
    }


def _host_info(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    # $env:COMPUTERNAME is the NetBIOS name: upper case.
    return Outcome({"hostname": ctx.host.name.upper(), "ps_version": PS_VERSION, **_powershell(ctx)})


def _host_preflight(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    path = _absolute(text_of(data, "settings_path"))
    name = service_named(ctx, data)
    local = ctx.state.resolve(path)
    faults = ctx.state.faults()
    dependents = [{"name": d, "state": ctx.state.service_state(d) or "Running"} for d in faults.dependents_of(name)]
    return Outcome(
        {
            **_powershell(ctx),
            "max_envelope_size_kb": faults.max_envelope_size_kb,
            "settings_size": local.stat().st_size if _kind(ctx, path) == "file" else None,
            "service": name,
            "start_type": faults.start_type_of(name),
            "account": "LocalSystem",
            "dependents": dependents,
        }
    )


# --------------------------------------------------------------------------- files


def _file_read(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    path = _absolute(text_of(data, "path"))
    kind = _kind(ctx, path)
    if kind == "folder":
        raise OperationFailed(f"not a file: {path} is a folder")
    if kind == "missing":
        return Outcome({"exists": False, "content_b64": "", "sha256": ""})
    # Opened with FileShare ReadWrite|Delete: a file another process holds open for writing reads fine.
    content = ctx.state.resolve(path).read_bytes()
    return Outcome(
        {"exists": True, "content_b64": base64.b64encode(content).decode("ascii"), "sha256": _sha256(content)}
    )


def _file_replace(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    path = _absolute(text_of(data, "path"))
    backup = _absolute(text_of(data, "backup_path"))
    wanted = text_of(data, "sha256").lower()
    expected = text_of(data, "expected_sha256").lower()
    try:
        content = base64.b64decode(data.get("content_b64", ""), validate=True)
    except (TypeError, ValueError) as exc:
        raise OperationFailed(f"content_b64 is not base64: {exc}") from exc
    local, local_backup = ctx.state.resolve(path), ctx.state.resolve(backup)
    with ctx.state.lock:
        if _kind(ctx, path) != "file":
            raise OperationFailed(f"file not found: {path}")
        current = _sha256(local.read_bytes())
        if current == wanted:
            return Outcome({"path": path, "backup_path": None, "sha256": wanted, "changed": False, "note": ""}, False)
        if current != expected:
            raise OperationFailed(
                f"file {path} changed since it was read (sha256 is {current}, expected {expected}); nothing was written"
            )
        if _kind(ctx, backup) != "missing":
            raise OperationFailed(f"backup file already exists: {backup}")
        note = _swap_in(ctx, path, local, local_backup, content, wanted)
    return Outcome({"path": path, "backup_path": backup, "sha256": wanted, "changed": True, "note": note}, True)


def _swap_in(ctx: HostContext, path: str, local: Path, local_backup: Path, content: bytes, wanted: str) -> str:
    """The template's swap: a checked temporary file beside the target, then [IO.File]::Replace with retries.

    Replace failures come from faults.json: ``replace_error``/``replace_failures`` (1175/1176/1177),
    ``locked_temp`` (a scanner holds the fresh file: 1176, and it cannot be deleted) and ``held_open``
    (another process holds the target without delete sharing: 1175). Returns the note of a recovery.
    """
    tmp = local.with_name(f"{local.name}.{uuid.uuid4().hex}.tmp")
    tmp_windows = f"{path}.{tmp.name.rsplit('.', 2)[-2]}.tmp"
    with tmp.open("wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    written = _sha256(tmp.read_bytes())
    if written != wanted:
        tmp.unlink(missing_ok=True)
        raise OperationFailed(
            f"content check failed: written sha256 {written}, expected {wanted}; nothing was replaced"
        )
    for attempt in range(1, REPLACE_ATTEMPTS + 1):
        faults = ctx.state.faults()
        if faults.locked_temp:
            code = 1176
        elif faults.is_held_open(path):
            code = 1175
        else:
            code = ctx.state.take_replace_failure()
        if code == 0 and not local_backup.parent.is_dir():
            code = 3  # the backup's folder does not exist
        if code == 0:
            _link_or_copy(local, local_backup)  # the original, byte for byte, under the backup name
            os.replace(tmp, local)
            return ""
        failure = _method_error("Replace", 3, code)
        if code == 1177:  # the original was renamed to the backup; the new content is still the temporary file
            os.replace(local, local_backup)
            if not faults.locked_temp:
                os.replace(tmp, local)
                return (
                    f"File.Replace failed (Win32 error {code}) after renaming the original to the backup; "
                    "the checked new content was moved into place"
                )
            shutil.copy2(local_backup, local)
            raise OperationFailed(
                f"replacing {path} failed (Win32 error {code}) and the new content could not be moved into place "
                f"({_method_error('Move', 2, 32)}); the original was copied back from the backup; "
                f"the new content is kept in {tmp_windows}"
            )
        if attempt >= REPLACE_ATTEMPTS or code not in RETRIED_ERRORS:
            left = ""
            if faults.locked_temp:
                left = f"; the temporary file {tmp_windows} could not be removed: {_method_error('Delete', 1, 32)}"
            else:
                tmp.unlink(missing_ok=True)
            raise OperationFailed(
                f"replacing {path} failed after {attempt} attempt(s): {failure}; {path} is unchanged{left}"
            )
        ctx.stopping.wait(0.25 * attempt)  # the template's Start-Sleep
    raise AssertionError("unreachable")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except PermissionError:
        shutil.copy2(source, target)  # a file system without hard links


def _path_test(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    kind = _kind(ctx, _absolute(text_of(data, "path")))
    return Outcome({"exists": kind != "missing", "is_dir": kind == "folder"})


# --------------------------------------------------------------------------- task queue


def _task_file(ctx: HostContext, data: dict[str, Any]) -> tuple[str, Path, Path]:
    folder = _absolute(text_of(data, "folder"))
    name = data.get("name")
    if not isinstance(name, str) or not name or _INVALID_FILE_NAME.search(name):
        raise OperationFailed(f"invalid task file name '{name}'")
    local_folder = ctx.state.resolve(folder)
    return join(folder, name), local_folder, ctx.state.resolve(join(folder, name))


def _taskqueue_drop(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    path, _, local = _task_file(ctx, data)
    if _kind(ctx, text_of(data, "folder")) != "folder":
        raise OperationFailed(f"task queue folder not found: {text_of(data, 'folder')}")
    try:
        with local.open("xb"):
            pass
    except FileExistsError:
        return Outcome({"path": path, "created": False, "already_waiting": True}, False)
    return Outcome({"path": path, "created": True, "already_waiting": False}, True)


def _taskqueue_status(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    path, _, _ = _task_file(ctx, data)
    exists = _kind(ctx, text_of(data, "folder")) == "folder"
    return Outcome({"folder_exists": exists, "waiting": exists and _kind(ctx, path) == "file"})


_HANDLERS: dict[str, Callable[[HostContext, dict[str, Any]], Outcome]] = {
    "host.info": _host_info,
    "host.preflight": _host_preflight,
    "service.query": service_query,
    "service.stop": service_stop,
    "service.start": service_start,
    "service.restart": service_restart,
    "file.read": _file_read,
    "file.replace": _file_replace,
    "path.test": _path_test,
    "taskqueue.drop": _taskqueue_drop,
    "taskqueue.status": _taskqueue_status,
}
