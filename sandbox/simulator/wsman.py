"""The WS-Management shell protocol as a Windows server speaks it: envelopes, shells and commands."""

from __future__ import annotations

import base64
import codecs
import logging
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from xml.sax.saxutils import escape, quoteattr

from sandbox.simulator.powershell import FIRST_USE_PROGRESS, ProcessResult, rejected

logger = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
TRANSFER_URI = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
SHELL_RESOURCE = SHELL_URI + "/cmd"
DONE_STATE = SHELL_URI + "/CommandState/Done"
RUNNING_STATE = SHELL_URI + "/CommandState/Running"

OPERATION_TIMEOUT_CODE = 2150858793  # 0x80338029, "ask again": pywinrm raises WinRMOperationTimeoutError
SHELL_NOT_FOUND_CODE = 2150858843  # 0x8033805B
SCHEMA_VALIDATION_CODE = 2150858817  # 0x80338041
ACTION_NOT_SUPPORTED_CODE = 2150858771  # 0x80338013
# 0x80338111: the request exceeded the service's MaxEnvelopeSizekb (what the WinRM client then reports).
MAX_ENVELOPE_CODE = 2150859025
MAX_ENVELOPE_REASON = (
    "The WinRM client sent a request to the remote WS-Management service and was notified that the request size "
    "exceeded the configured MaxEnvelopeSize quota."
)
# A process writes its output in pieces; the service forwards each as one rsp:Stream element.
STREAM_PIECE = 4093  # deliberately odd: pieces end inside multi-byte characters
CLIENT_MAX_ENVELOPE = 153600  # what a client that sends no MaxEnvelopeSize gets
RECEIVE_OVERHEAD = 2048  # the envelope around the streams of a ReceiveResponse

_ENVELOPE = (
    '<s:Envelope xml:lang="en-US" xmlns:s="{s}" xmlns:a="{a}" xmlns:x="{x}" xmlns:w="{w}" xmlns:rsp="{rsp}" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
).format(**NS)
_DURATION = re.compile(r"\APT(?P<seconds>\d+(?:\.\d+)?)S\Z")


class ShellHost(Protocol):
    """The simulated host behind an endpoint, as the shell protocol needs it."""

    name: str

    def launch(self, command: str, arguments: str) -> ProcessResult | bytes | None:
        """The inline script to run now; None when it waits for its script on stdin; else its failed result."""

    def run(self, stdin: bytes) -> ProcessResult:
        """Run the accepted command with its complete stdin."""

    def take_timeout_fault(self) -> bool:
        """True when this Receive must be answered with the operation-timeout fault."""

    def max_envelope_kb(self) -> int:
        """The service's MaxEnvelopeSizekb: a larger request is refused."""


class WSManFault(Exception):
    """A request Windows would answer with an HTTP 500 SOAP fault."""

    def __init__(self, code: str, subcode: str, reason: str, wsman_code: int) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code


@dataclass
class Command:
    id: str
    codepage: str = "437"
    first_in_shell: bool = False
    stdin: bytearray = field(default_factory=bytearray)
    result: ProcessResult | None = None
    started: bool = False
    done: threading.Condition = field(default_factory=threading.Condition)
    pending: list[tuple[str, bytes]] | None = None  # output not yet received, in stream pieces

    def finish(self, result: ProcessResult) -> None:
        with self.done:
            self.result = result
            self.done.notify_all()


@dataclass
class Shell:
    id: str
    codepage: str
    commands: dict[str, Command] = field(default_factory=dict)
    launched: int = 0


@dataclass(frozen=True)
class Request:
    action: str
    message_id: str
    shell_id: str | None
    operation_timeout_s: float
    root: ET.Element
    max_envelope: int = CLIENT_MAX_ENVELOPE  # the client's wsman:MaxEnvelopeSize for the reply

    def body(self, path: str) -> ET.Element | None:
        return self.root.find("s:Body/" + path, NS)


class WSManService:
    """The shells and commands of one simulated host; ``handle`` answers one POST /wsman body."""

    def __init__(
        self,
        host: ShellHost,
        spawn: Callable[[Callable[[], None]], None],
        stopping: threading.Event,
        machine: str,
    ) -> None:
        self.host = host
        self._spawn = spawn
        self._stopping = stopping
        self._machine = machine
        self._lock = threading.Lock()
        self._shells: dict[str, Shell] = {}

    def handle(self, body: bytes) -> tuple[int, bytes]:
        """The HTTP status and SOAP envelope Windows would answer ``body`` with."""
        relates_to = ""
        try:
            if len(body) > self.host.max_envelope_kb() * 1024:
                raise WSManFault("s:Sender", "w:EncodingLimit", MAX_ENVELOPE_REASON, MAX_ENVELOPE_CODE)
            request = parse_request(body)
            relates_to = request.message_id
            reply = self._dispatch(request)
        except WSManFault as fault:
            return 500, self._fault(fault, relates_to)
        return 200, reply

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, request: Request) -> bytes:
        handlers = {
            TRANSFER_URI + "/Create": self._create,
            TRANSFER_URI + "/Delete": self._delete,
            SHELL_URI + "/Command": self._command,
            SHELL_URI + "/Send": self._send,
            SHELL_URI + "/Receive": self._receive,
            SHELL_URI + "/Signal": self._signal,
        }
        handler = handlers.get(request.action)
        if handler is None:
            raise WSManFault(
                "s:Sender",
                "a:ActionNotSupported",
                f"The action is not supported by the service: {request.action}",
                ACTION_NOT_SUPPORTED_CODE,
            )
        return handler(request)

    def _create(self, request: Request) -> bytes:
        codepage = "437"
        for option in request.root.findall("s:Header/w:OptionSet/w:Option", NS):
            if option.get("Name") == "WINRS_CODEPAGE" and option.text:
                codepage = option.text.strip()
        if _codec(codepage) is None:
            raise WSManFault(
                "s:Sender",
                "w:InvalidOptions",
                f"The WinRS client cannot process the request. The code page {codepage} is not valid.",
                2150859093,
            )
        shell = Shell(id=str(uuid.uuid4()).upper(), codepage=codepage)
        with self._lock:
            self._shells[shell.id] = shell
        return self._reply(
            request,
            TRANSFER_URI + "/CreateResponse",
            "<x:ResourceCreated><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address>"
            f"<a:ReferenceParameters><w:ResourceURI>{SHELL_RESOURCE}</w:ResourceURI><w:SelectorSet>"
            f'<w:Selector Name="ShellId">{shell.id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
            "</x:ResourceCreated>"
            f'<rsp:Shell xmlns:rsp="{SHELL_URI}"><rsp:ShellId>{shell.id}</rsp:ShellId>'
            f"<rsp:ResourceUri>{SHELL_RESOURCE}</rsp:ResourceUri><rsp:Owner>{escape(self.host.name)}</rsp:Owner>"
            "<rsp:ClientIP>127.0.0.1</rsp:ClientIP><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            "<rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
            "</rsp:Shell>",
        )

    def _delete(self, request: Request) -> bytes:
        shell = self._shell(request)
        with self._lock:
            self._shells.pop(shell.id, None)
        return self._reply(request, TRANSFER_URI + "/DeleteResponse", "")

    def _command(self, request: Request) -> bytes:
        shell = self._shell(request)
        line = request.body("rsp:CommandLine")
        command_el = line.find("rsp:Command", NS) if line is not None else None
        if line is None or command_el is None:
            raise _schema_fault("the Command request has no rsp:CommandLine/rsp:Command")
        arguments = " ".join((a.text or "") for a in line.findall("rsp:Arguments", NS))
        with self._lock:
            shell.launched += 1
            first = shell.launched == 1
        command = Command(id=str(uuid.uuid4()).upper(), codepage=shell.codepage, first_in_shell=first)
        launched = self.host.launch((command_el.text or "").strip(), arguments)
        if isinstance(launched, bytes):  # the script came inline: it runs at once, no stdin
            command.stdin += launched
            command.started = True
            self._spawn(self._runner(command))
        elif launched is not None:
            command.finish(launched)
        with self._lock:
            shell.commands[command.id] = command
        return self._reply(
            request,
            SHELL_URI + "/CommandResponse",
            f"<rsp:CommandResponse><rsp:CommandId>{command.id}</rsp:CommandId></rsp:CommandResponse>",
        )

    def _send(self, request: Request) -> bytes:
        shell = self._shell(request)
        streams = request.root.findall("s:Body/rsp:Send/rsp:Stream", NS)
        for stream in streams:
            command = self._command_of(shell, stream.get("CommandId"))
            if stream.get("Name") != "stdin":
                continue
            try:
                command.stdin += base64.b64decode((stream.text or "").strip(), validate=True)
            except ValueError as exc:
                raise _schema_fault(f"the stdin stream is not base64: {exc}") from exc
            if stream.get("End", "").lower() == "true" and not command.started:
                command.started = True
                if command.result is None:
                    self._spawn(self._runner(command))
        return self._reply(request, SHELL_URI + "/SendResponse", "<rsp:SendResponse/>")

    def _runner(self, command: Command) -> Callable[[], None]:
        def run() -> None:
            try:
                result = self.host.run(bytes(command.stdin))
            except Exception as exc:  # the simulated process crashed: fail loudly, never leave Receive hanging
                logger.exception("simulated command on %s crashed", self.host.name)
                result = rejected(f"the simulated platform failed: {type(exc).__name__}: {exc}")
            command.finish(result)

        return run

    def _receive(self, request: Request) -> bytes:
        shell = self._shell(request)
        desired = request.body("rsp:Receive/rsp:DesiredStream")
        command = self._command_of(shell, desired.get("CommandId") if desired is not None else None)
        if self.host.take_timeout_fault():
            raise _timeout_fault()
        deadline = time.monotonic() + request.operation_timeout_s
        with command.done:
            while command.result is None and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                command.done.wait(min(remaining, 0.5))
            result = command.result
            if result is None:
                raise _timeout_fault()
            if command.pending is None:
                command.pending = _pieces(command, result)
            # The reply must fit the client's MaxEnvelopeSize: the rest waits for the next Receive.
            budget = max(1024, request.max_envelope - RECEIVE_OVERHEAD)
            batch: list[tuple[str, bytes]] = []
            while command.pending and (not batch or _encoded_size(batch + command.pending[:1]) <= budget):
                batch.append(command.pending.pop(0))
            finished = not command.pending
        body = _receive_body(command.id, batch, result.exit_code if finished else None)
        return self._reply(request, SHELL_URI + "/ReceiveResponse", body)

    def _signal(self, request: Request) -> bytes:
        shell = self._shell(request)
        signal = request.body("rsp:Signal")
        command = self._command_of(shell, signal.get("CommandId") if signal is not None else None)
        with self._lock:
            shell.commands.pop(command.id, None)
        return self._reply(request, SHELL_URI + "/SignalResponse", "<rsp:SignalResponse/>")

    # ------------------------------------------------------------------ lookups and envelopes

    def _shell(self, request: Request) -> Shell:
        with self._lock:
            shell = self._shells.get((request.shell_id or "").upper())
        if shell is None:
            raise WSManFault(
                "s:Sender",
                "w:InvalidSelectors",
                f"The request for the Windows Remote Shell with ShellId {request.shell_id} failed because the shell "
                "was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell "
                "no longer exists on the server. Provide the correct ShellId or create a new shell and execute the "
                "remote command again. ",
                SHELL_NOT_FOUND_CODE,
            )
        return shell

    def _command_of(self, shell: Shell, command_id: str | None) -> Command:
        with self._lock:
            command = shell.commands.get((command_id or "").upper())
        if command is None:
            raise WSManFault(
                "s:Sender",
                "w:InvalidSelectors",
                f"The request for the Windows Remote Shell with ShellId {shell.id} failed because the command with "
                f"CommandId {command_id} was not found on the server. ",
                SHELL_NOT_FOUND_CODE,
            )
        return command

    def _reply(self, request: Request, action: str, body: str) -> bytes:
        return _envelope(action, request.message_id, body)

    def _fault(self, fault: WSManFault, relates_to: str) -> bytes:
        reason = escape(fault.reason)
        body = (
            f"<s:Fault><s:Code><s:Value>{fault.code}</s:Value><s:Subcode><s:Value>{fault.subcode}</s:Value>"
            f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{reason}</s:Text></s:Reason><s:Detail>'
            f'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{fault.wsman_code}" '
            f"Machine={quoteattr(self._machine)}><f:Message>{reason}</f:Message></f:WSManFault></s:Detail></s:Fault>"
        )
        return _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body)


def parse_request(body: bytes) -> Request:
    """The parts of a WS-Man request envelope the shell protocol uses."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise _schema_fault(f"The request is not a well-formed SOAP envelope: {exc}") from exc
    header = root.find("s:Header", NS)
    if root.tag != f"{{{NS['s']}}}Envelope" or header is None:
        raise _schema_fault("The request is not a SOAP 1.2 envelope with a header.")
    action = (header.findtext("a:Action", "", NS) or "").strip()
    message_id = (header.findtext("a:MessageID", "", NS) or "").strip()
    shell_id = None
    for selector in header.findall("w:SelectorSet/w:Selector", NS):
        if selector.get("Name") == "ShellId":
            shell_id = (selector.text or "").strip()
    match = _DURATION.match((header.findtext("w:OperationTimeout", "", NS) or "").strip())
    timeout = float(match.group("seconds")) if match else 60.0
    try:
        max_envelope = int((header.findtext("w:MaxEnvelopeSize", "", NS) or "").strip())
    except ValueError:
        max_envelope = CLIENT_MAX_ENVELOPE
    return Request(action, message_id, shell_id, timeout, root, max_envelope)


def _codec(codepage: str) -> str | None:
    """Python's codec for a Windows code page number (65001 is UTF-8), None when there is none."""
    name = "utf-8" if codepage.strip() == "65001" else f"cp{codepage.strip()}"
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return name


def _pieces(command: Command, result: ProcessResult) -> list[tuple[str, bytes]]:
    """The command's output as the service forwards it: in the shell's code page, in pieces, stderr after.

    powershell.exe writes its output in the console code page the shell was created with: what is not in
    that code page arrives as '?'. A process that loads modules for the first time reports it as CLIXML
    progress records on stderr, even when the command succeeds.
    """
    codec = _codec(command.codepage) or "cp437"
    stdout = result.stdout.decode("utf-8", errors="replace").encode(codec, errors="replace")
    stderr = result.stderr
    if command.first_in_shell and result.exit_code == 0 and not stderr:
        stderr = FIRST_USE_PROGRESS
    pieces: list[tuple[str, bytes]] = []
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        cuts = set(range(STREAM_PIECE, len(data), STREAM_PIECE))
        cuts.update(i + 1 for i, line_end in enumerate(data) if line_end == 0x0A and i + 1 < len(data))
        multibyte = next((i for i, byte in enumerate(data) if byte >= 0xC0), None)
        if multibyte is not None and codec == "utf-8":
            cuts.add(multibyte + 1)  # one cut inside the first multi-byte character
        start = 0
        for cut in sorted(cuts):
            pieces.append((name, data[start:cut]))
            start = cut
        if start < len(data):
            pieces.append((name, data[start:]))
    return pieces


def _encoded_size(pieces: list[tuple[str, bytes]]) -> int:
    return sum(120 + 4 * ((len(data) + 2) // 3) for _, data in pieces)


def _receive_body(command_id: str, pieces: list[tuple[str, bytes]], exit_code: int | None) -> str:
    """A ReceiveResponse with ``pieces``; Done with ``exit_code`` when it is the last, else Running."""
    streams = []
    for name, data in pieces:
        encoded = base64.b64encode(data).decode("ascii")
        streams.append(f'<rsp:Stream Name="{name}" CommandId="{command_id}">{encoded}</rsp:Stream>')
    if exit_code is None:
        state = f'<rsp:CommandState CommandId="{command_id}" State="{RUNNING_STATE}"/>'
    else:
        streams.append(f'<rsp:Stream Name="stdout" CommandId="{command_id}" End="true"></rsp:Stream>')
        streams.append(f'<rsp:Stream Name="stderr" CommandId="{command_id}" End="true"></rsp:Stream>')
        state = (
            f'<rsp:CommandState CommandId="{command_id}" State="{DONE_STATE}">'
            f"<rsp:ExitCode>{exit_code}</rsp:ExitCode></rsp:CommandState>"
        )
    return "<rsp:ReceiveResponse>" + "".join(streams) + state + "</rsp:ReceiveResponse>"


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    text = (
        '<?xml version="1.0" ?>'
        + _ENVELOPE
        + f"<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        + "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        + relates
        + "</s:Header>"
        + (f"<s:Body>{body}</s:Body>" if body else "<s:Body/>")
        + "</s:Envelope>"
    )
    return text.encode("utf-8")


def _timeout_fault() -> WSManFault:
    return WSManFault(
        "s:Receiver",
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ",
        OPERATION_TIMEOUT_CODE,
    )


def _schema_fault(reason: str) -> WSManFault:
    return WSManFault("s:Sender", "w:SchemaValidationError", reason, SCHEMA_VALIDATION_CODE)
