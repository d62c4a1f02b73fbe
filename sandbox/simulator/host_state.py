"""One simulated Windows host's state on disk: its files, services.json and faults.json."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_STATES = ("Running", "Stopped", "StartPending", "StopPending", "Paused")
DEFAULT_MAX_ENVELOPE_KB = 500  # Windows Server 2012 and later

_DRIVE_PATH = re.compile(r"\A(?P<drive>[A-Za-z]):[\\/](?P<rest>.*)\Z", re.DOTALL)
_INVALID_PATH_CHARS = re.compile(r'[<>:"|?*\x00-\x1f]')


class PathRejected(ValueError):
    """A Windows path the simulated host cannot map (relative, UNC, '..', illegal characters)."""


@dataclass(frozen=True)
class Faults:
    """The injected faults of one host, as faults.json holds them right now."""

    latency_ms: int = 0
    handshake_ms: int = 0  # extra delay on the first request of each new connection (NTLM/Kerberos handshake)
    refuse: bool = False
    reject_auth: bool = False
    timeout_faults: int = 0
    stuck: dict[str, str] = field(default_factory=dict)
    max_envelope_size_kb: int = DEFAULT_MAX_ENVELOPE_KB  # WinRM's MaxEnvelopeSizekb
    replace_error: int = 0  # Win32 error of [IO.File]::Replace: 1175, 1176 or 1177
    replace_failures: int = 0  # how many Replace attempts fail with it (a large number: every one)
    locked_temp: bool = False  # the fresh temporary file stays locked (antivirus): Replace fails, it cannot be deleted
    held_open: tuple[str, ...] = ()  # Windows paths another process holds open for writing (running AccountServer)
    constrained_language: bool = False  # AppLocker/WDAC: PowerShell runs in ConstrainedLanguage mode
    execution_policies: dict[str, str] = field(default_factory=dict)  # scope → policy, e.g. MachinePolicy
    start_type: dict[str, str] = field(default_factory=dict)  # service → Automatic | Manual | Disabled
    dependents: dict[str, tuple[str, ...]] = field(default_factory=dict)  # service → services that depend on it
    logon_failure: tuple[str, ...] = ()  # services whose account cannot log on (Win32 error 1069)
    denied: tuple[str, ...] = ()  # Windows paths the WinRM user may not open (access denied)
    consume_delay_s: float = 0.0  # spec v3: an AccountServer consumes a task file this long after it appears
    consume: bool = True  # spec v3: "consume": false — it never does

    def stuck_state(self, service: str) -> str | None:
        """The pending state ``service`` is held in, matched case-insensitively like Windows."""
        return _by_service(self.stuck, service)

    def start_type_of(self, service: str) -> str:
        return _by_service(self.start_type, service) or "Automatic"

    def dependents_of(self, service: str) -> tuple[str, ...]:
        return _by_service(self.dependents, service) or ()

    def is_held_open(self, windows_path: str) -> bool:
        return any(p.lower() == windows_path.lower() for p in self.held_open)

    def is_denied(self, windows_path: str) -> bool:
        return any(p.lower() == windows_path.lower() for p in self.denied)


def _by_service(mapping: dict[str, Any], service: str) -> Any:
    for name, value in mapping.items():
        if name.lower() == service.lower():
            return value
    return None


@dataclass(frozen=True)
class SettingsInfo:
    """What the simulator needs from a Settings.xml: the server's GUID and whether it is a Slave."""

    server_guid: str | None
    is_slave: bool


class HostState:
    """Files under ``DIR/<host>/<drive>/``, services and faults of one host; nothing is cached."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self.name = name
        self.root = state_dir / name
        # Serialises read-modify-write of services.json and faults.json within this process.
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ paths

    @property
    def services_file(self) -> Path:
        return self.root / "services.json"

    @property
    def faults_file(self) -> Path:
        return self.root / "faults.json"

    def resolve(self, windows_path: str) -> Path:
        """The local path of ``windows_path``, each component matched case-insensitively."""
        match = _DRIVE_PATH.match(windows_path)
        if not match:
            raise PathRejected(f"not an absolute path: '{windows_path}'")
        parts = [p for p in re.split(r"[\\/]+", match.group("rest")) if p]
        for part in parts:
            if part in (".", "..") or _INVALID_PATH_CHARS.search(part):
                raise PathRejected(f"Illegal characters in path: '{windows_path}'")
        current = _match_entry(self.root, match.group("drive").upper())
        for part in parts:
            current = _match_entry(current, part)
        return current

    # ------------------------------------------------------------------ services

    def services(self) -> dict[str, str]:
        """services.json as it is on disk now (an empty mapping when absent or unreadable)."""
        data = _read_json(self.services_file)
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def set_service_state(self, service: str, state: str) -> None:
        with self.lock:
            services = self.services()
            services[service] = state
            write_atomically(self.services_file, (json.dumps(services, indent=2) + "\n").encode("utf-8"))

    def service_state(self, service: str) -> str | None:
        """The state Windows would report: a stuck fault wins over services.json."""
        stuck = self.faults().stuck_state(service)
        if stuck is not None:
            return stuck
        return self.services().get(service)

    # ------------------------------------------------------------------ faults

    def faults(self) -> Faults:
        """faults.json as it is now; absent or unreadable (mid-edit) means no faults."""
        data = _read_json(self.faults_file)
        if not isinstance(data, dict):
            return Faults()
        try:
            return Faults(
                latency_ms=max(0, int(data.get("latency_ms") or 0)),
                handshake_ms=max(0, int(data.get("handshake_ms") or 0)),
                refuse=bool(data.get("refuse")),
                reject_auth=bool(data.get("reject_auth")),
                timeout_faults=max(0, int(data.get("timeout_faults") or 0)),
                stuck=_str_map(data.get("stuck")),
                max_envelope_size_kb=max(32, int(data.get("max_envelope_size_kb") or DEFAULT_MAX_ENVELOPE_KB)),
                replace_error=int(data.get("replace_error") or 0),
                replace_failures=max(0, int(data.get("replace_failures") or 0)),
                locked_temp=bool(data.get("locked_temp")),
                held_open=tuple(str(p) for p in data.get("held_open") or ()),
                constrained_language=bool(data.get("constrained_language")),
                execution_policies=_str_map(data.get("execution_policies")),
                start_type=_str_map(data.get("start_type")),
                dependents={str(k): tuple(str(d) for d in v) for k, v in (data.get("dependents") or {}).items()},
                logon_failure=tuple(str(s) for s in data.get("logon_failure") or ()),
                denied=tuple(str(p) for p in data.get("denied") or ()),
                consume_delay_s=max(0.0, float(data.get("consume_delay_s") or 0)),
                consume=data.get("consume", True) is not False,
            )
        except (TypeError, ValueError, AttributeError):
            return Faults()

    def take_replace_failure(self) -> int:
        """The Win32 error of the next [IO.File]::Replace attempt (0: it succeeds); consumes one failure."""
        with self.lock:
            data = _read_json(self.faults_file)
            if not isinstance(data, dict):
                return 0
            try:
                error, pending = int(data.get("replace_error") or 0), int(data.get("replace_failures") or 0)
            except (TypeError, ValueError):
                return 0
            if not error or pending <= 0:
                return 0
            data["replace_failures"] = pending - 1
            write_atomically(self.faults_file, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
            return error

    def take_timeout_fault(self) -> bool:
        """Consume one pending operation-timeout fault (decrementing the file); False if none."""
        with self.lock:
            data = _read_json(self.faults_file)
            if not isinstance(data, dict):
                return False
            try:
                pending = int(data.get("timeout_faults") or 0)
            except (TypeError, ValueError):
                return False
            if pending <= 0:
                return False
            data["timeout_faults"] = pending - 1
            write_atomically(self.faults_file, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
            return True

    # ------------------------------------------------------------------ Settings.xml

    def read_settings(self, windows_path: str) -> SettingsInfo | None:
        """ServerGuid and IsSlave of a Settings.xml; None when missing or not parseable."""
        try:
            raw = self.resolve(windows_path).read_bytes()
            root = ET.fromstring(raw)
        except (OSError, ET.ParseError, PathRejected):
            return None
        guid = root.findtext("ServerGuid")
        is_slave = (root.findtext("IsSlave") or "False").strip().lower() == "true"
        return SettingsInfo(server_guid=guid.strip() if guid else None, is_slave=is_slave)


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _match_entry(folder: Path, name: str) -> Path:
    """``folder/name``, or the existing entry whose name equals ``name`` ignoring case."""
    exact = folder / name
    if exact.exists() or not folder.is_dir():
        return exact
    for entry in sorted(folder.iterdir()):
        if entry.name.lower() == name.lower():
            return entry
    return exact


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None


def write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file beside it and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
