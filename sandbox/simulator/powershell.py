"""What ``powershell.exe`` does on a simulated host: check the command line, read the script, act."""

from __future__ import annotations

import json
from dataclasses import dataclass
from xml.sax.saxutils import escape

from actions import protocol
from sandbox.simulator.operation_base import HostContext, OperationFailed
from sandbox.simulator.operations import perform, target_of
from sandbox.simulator.oplog import OperationLog


@dataclass(frozen=True)
class ProcessResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


def expected_arguments() -> str:
    """The Arguments text pywinrm sends for the executor's command (it joins them with spaces)."""
    return " ".join(protocol.powershell_arguments())


def check_command_line(command: str, arguments: str) -> str | None:
    """Why this command line is not one the executor sends, or None when it is (bootstrap or inline)."""
    if command != protocol.POWERSHELL:
        return f"the simulated platform runs only '{protocol.POWERSHELL}', not '{command}'"
    if arguments != expected_arguments() and protocol.inline_script(arguments) is None:
        return (
            f"{protocol.POWERSHELL} was started with unexpected arguments; the simulated platform accepts only "
            "actions.protocol.command_arguments() (an inline script or the stdin bootstrap)"
        )
    return None


CLM_MESSAGE = "Cannot invoke method. Method invocation is supported only on core types in this language mode."


def _progress_record(ref: int) -> str:
    type_names = (
        '<TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>'
        if ref == 0
        else '<TNRef RefId="0" />'
    )
    return (
        f'<Obj S="progress" RefId="{ref}">{type_names}<MS><I64 N="SourceId">1</I64><PR N="Record">'
        "<AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T>"
        "<SR>-1</SR><SD> </SD></PR></MS></Obj>"
    )


# What powershell.exe writes on stderr when it loads modules for the first time, even for a command that
# succeeds (the shape of the records pywinrm's tests recorded from Windows; see tests/data/pywinrm).
FIRST_USE_PROGRESS = (
    "#< CLIXML\r\n"
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    + _progress_record(0)
    + _progress_record(1)
    + "</Objs>"
).encode()


def clixml_error(message: str) -> bytes:
    """An error record on stderr the way powershell.exe serialises it for a remote shell."""
    text = escape(message).replace("\r", "").replace("\n", "_x000D__x000A_")
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f'<S S="Error">{text}_x000D__x000A_</S></Objs>'
    ).encode()


def rejected(message: str) -> ProcessResult:
    return ProcessResult(b"", clixml_error(message), 1)


def run_script(ctx: HostContext, log: OperationLog, stdin: bytes) -> ProcessResult:
    """Parse the operation script (inline or from stdin), perform it, and print its one JSON result line."""
    try:
        script = stdin.decode("utf-8-sig")
        op, data = protocol.parse(script)
    except (UnicodeDecodeError, protocol.ProtocolError) as exc:
        message = f"the script is not an operation of actions/protocol.py: {exc}"
        log.record(ctx.host.name, "script.rejected", "", "failed", error=message)
        return rejected(message)
    target = target_of(op, data)
    if op != "host.info" and ctx.state.faults().constrained_language:
        # AppLocker/WDAC: the template's first .NET call ([Convert]::FromBase64String) is refused.
        log.record(ctx.host.name, op, target, "failed", error=CLM_MESSAGE)
        return ProcessResult(_line({"ok": False, "error": CLM_MESSAGE}), b"", 1)
    try:
        outcome = perform(ctx, op, data)
    except OperationFailed as exc:
        log.record(ctx.host.name, op, target, "failed", error=str(exc))
        return ProcessResult(_line({"ok": False, "error": str(exc)}), b"", 1)
    log.record(ctx.host.name, op, target, "ok", changed=outcome.changed)
    return ProcessResult(_line({"ok": True, **outcome.result}), b"", 0)


def _line(result: dict[str, object]) -> bytes:
    # ConvertTo-Json -Compress as Windows PowerShell 5.1 writes it (non-ASCII as is; < > ' & escaped),
    # then Windows' line ending. The console code page encodes it later (sandbox/simulator/wsman.py).
    text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("'", "\\u0027"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return (text + "\r\n").encode("utf-8")
