"""The wire format of one remote operation: how a PowerShell template is rendered and read back.

Every operation the bot performs on a Windows host is one ``actions/scripts/<op>.ps1`` template.
A rendered template that fits on a command line travels inline, as ``powershell.exe -EncodedCommand
<base64 of UTF-16LE>`` (one WS-Man Command, no Send). A larger one — ``file.replace`` carrying a
whole Settings.xml — goes over stdin: the executor then runs a fixed, short bootstrap as
``-EncodedCommand`` and sends the script as stdin; the bootstrap reads stdin to the end and runs it
as a script block. A rendered template:

- starts with the header line ``# op: <name>`` (the simulated platform dispatches on it);
- carries all of its data as ONE line ``$DataB64 = '<base64 of UTF-8 JSON>'`` (base64 holds no
  quote, ``$`` or backtick, so nothing from configuration or Slack is ever spliced into code);
- prints exactly one JSON line on stdout: ``{"ok": true, ...}`` and exits 0, or
  ``{"ok": false, "error": "<message>"}`` and exits 1.

Operations and their data / results (paths are Windows paths):

=================  =======================================  ==========================================
op                 data                                     result (besides ``ok``)
=================  =======================================  ==========================================
host.info          {}                                       hostname, ps_version, language_mode,
                                                            execution_policies [{scope, policy}]
host.preflight     service, settings_path                   language_mode, execution_policies,
                   (always over stdin)                      max_envelope_size_kb, settings_size, service,
                                                            start_type, account, dependents [{name, state}]
service.query      service                                  service, state
service.stop       service, timeout_s                       service, state, changed
service.start      service, timeout_s                       service, state, changed
service.restart    service, timeout_s                       service, state
file.read          path                                     exists, content_b64, sha256
file.replace       path, content_b64, sha256,               path, backup_path, sha256, changed, note
                   expected_sha256, backup_path
path.test          path                                     exists, is_dir
taskqueue.drop     folder, name                             path, created, already_waiting
taskqueue.status   folder, name                             folder_exists, waiting
=================  =======================================  ==========================================

Service states use Windows' names: Running, Stopped, StartPending, StopPending, Paused. A service
name must match exactly one service (``Get-Service`` accepts wildcards; the script refuses them).
``file.replace`` writes a temporary file beside the target, checks its SHA-256 against ``sha256``,
refuses when the current file's hash is not ``expected_sha256`` (someone changed it since it was
read) and then swaps it in with ``[IO.File]::Replace`` keeping the original as ``backup_path``;
when the current file already has hash ``sha256`` it changes nothing (``changed: false``).
Replace is retried on 1175/1176/1177 and sharing violations; when it fails after renaming the original
(1177) the checked new content (or else the original) is put back in place, and ``note`` says so.

Every template starts with the same prologue (``$ErrorActionPreference``, ``$ProgressPreference``, the
whole exception chain in failures) and checks paths as ``^[A-Za-z]:\\`` equal to their ``GetFullPath``;
tests/test_ps51_lint.py holds them to Windows PowerShell 5.1 on .NET Framework 4.6.2.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from importlib import resources
from typing import Any

OPERATIONS = (
    "host.info",
    "host.preflight",
    "service.query",
    "service.stop",
    "service.start",
    "service.restart",
    "file.read",
    "file.replace",
    "path.test",
    "taskqueue.drop",
    "taskqueue.status",
)

# Operations that always travel over stdin, however short: host.preflight proves the route works.
STDIN_OPERATIONS = frozenset({"host.preflight", "file.replace"})
DATA_PLACEHOLDER = "__FAILOVER_DATA__"
_HEADER = re.compile(r"\A(?:\ufeff)?# op: (?P<op>[a-z.]+)\r?\n")
_DATA_LINE = re.compile(r"^\$DataB64 = '(?P<b64>[A-Za-z0-9+/=]*)'\r?$", re.MULTILINE)

# The bootstrap is the whole command line. It reads the operation script from stdin.
# $ProgressPreference first: progress records would otherwise arrive on stderr as CLIXML.
BOOTSTRAP = (
    "$ProgressPreference = 'SilentlyContinue'; "
    "$ErrorActionPreference = 'Stop'; "
    "$script = [Console]::In.ReadToEnd(); "
    "& ([ScriptBlock]::Create($script)); "
    "exit $LASTEXITCODE"
)
POWERSHELL = "powershell.exe"
_BASE_ARGUMENTS = ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"]
# cmd.exe caps a command line at 8,191 characters; the executable and the fixed arguments take 81 of them.
INLINE_LIMIT = 8000


class ProtocolError(ValueError):
    """A rendered script or a result line does not follow this module's format."""


def encoded_bootstrap() -> str:
    """The bootstrap as ``-EncodedCommand`` wants it: base64 of UTF-16LE."""
    return base64.b64encode(BOOTSTRAP.encode("utf-16-le")).decode("ascii")


def powershell_arguments() -> list[str]:
    """Arguments of ``powershell.exe`` when the script comes over stdin (the bootstrap)."""
    return [*_BASE_ARGUMENTS, encoded_bootstrap()]


def command_arguments(script: str, *, over_stdin: bool = False) -> tuple[list[str], bytes | None]:
    """Arguments of ``powershell.exe`` for ``script``, and its stdin (None when it travels inline)."""
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    if len(encoded) <= INLINE_LIMIT and not over_stdin:
        return [*_BASE_ARGUMENTS, encoded], None
    return powershell_arguments(), script.encode("utf-8")


def inline_script(arguments: str) -> str | None:
    """The script of an inline command line (pywinrm joins the arguments with spaces); None otherwise."""
    prefix = " ".join(_BASE_ARGUMENTS) + " "
    if not arguments.startswith(prefix):
        return None
    encoded = arguments[len(prefix) :]
    if encoded == encoded_bootstrap() or len(encoded) > INLINE_LIMIT:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-16-le")
    except (ValueError, UnicodeDecodeError):
        return None


@cache
def template(op: str) -> str:
    """The template text of operation ``op``."""
    if op not in OPERATIONS:
        raise ProtocolError(f"unknown operation {op!r}")
    text = resources.files("actions.scripts").joinpath(f"{op}.ps1").read_text(encoding="utf-8")
    match = _HEADER.match(text)
    if not match or match.group("op") != op:
        raise ProtocolError(f"template {op}.ps1 does not start with '# op: {op}'")
    if text.count(DATA_PLACEHOLDER) != 1:
        raise ProtocolError(f"template {op}.ps1 must contain {DATA_PLACEHOLDER} exactly once")
    return text


def encode_data(data: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode("utf-8")).decode("ascii")


def render(op: str, data: dict[str, Any]) -> str:
    """The script of ``op`` with ``data``, without comment lines, blank lines and indentation.

    The templates are written to be read; what travels is kept short so that more of them fit on the
    command line (no template has a multi-line string, so dropping indentation changes nothing).
    """
    header, _, body = template(op).partition("\n")
    lines = [header.rstrip("\r")]
    for line in body.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return "\n".join(lines).replace(DATA_PLACEHOLDER, encode_data(data)) + "\n"


def parse(script: str) -> tuple[str, dict[str, Any]]:
    """Read the operation name and data back from a rendered script (the simulator's side)."""
    header = _HEADER.match(script)
    if not header:
        raise ProtocolError("script does not start with an '# op: <name>' header")
    op = header.group("op")
    if op not in OPERATIONS:
        raise ProtocolError(f"unknown operation {op!r}")
    lines = _DATA_LINE.findall(script)
    if len(lines) != 1:
        raise ProtocolError(f"expected exactly one $DataB64 line, found {len(lines)}")
    try:
        data = json.loads(base64.b64decode(lines[0], validate=True).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"data blob is not base64 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("data blob is not a JSON object")
    return op, data


def parse_result(stdout: str) -> dict[str, Any]:
    """The single JSON result line of an operation's stdout (other lines are ignored)."""
    # powershell.exe may start its output with a byte order mark (UTF-8 code page): not part of the line.
    candidates = [ln for ln in stdout.splitlines() if ln.strip().lstrip("\ufeff").startswith("{")]
    if not candidates:
        raise ProtocolError("the operation printed no JSON result line")
    try:
        result = json.loads(candidates[-1].strip().lstrip("\ufeff"))
    except ValueError as exc:
        raise ProtocolError(f"the result line is not JSON: {exc}") from exc
    if not isinstance(result, dict) or "ok" not in result:
        raise ProtocolError("the result line has no 'ok' field")
    return result
