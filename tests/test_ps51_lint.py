"""A Windows PowerShell 5.1 lint of the operation templates (tree-sitter), and what each template must do.

Nothing here runs PowerShell: the templates are parsed, and the parse is checked against what Windows
PowerShell 5.1 on .NET Framework 4.6.2 accepts and against the rules of issue 15 (safe replace, explicit
service states, the whole exception chain, shared reads, honest path checks).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import tree_sitter
import tree_sitter_powershell

from actions import protocol

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))

# .NET types the templates may name, with the static members they may use: each exists in .NET Framework
# 4.6.2 (the oldest runtime under Windows PowerShell 5.1 on Windows Server 2016 and later).
STATIC_MEMBERS: dict[str, set[str]] = {
    "System.IO.File": {"GetAttributes", "Open", "WriteAllBytes", "Replace", "Move", "Copy", "Delete"},
    "System.IO.Path": {"GetFullPath", "GetDirectoryName", "GetFileName", "Combine", "GetInvalidFileNameChars"},
    "System.IO.FileMode": {"Open", "CreateNew"},
    "System.IO.FileAccess": {"Read"},
    "System.IO.FileShare": set(),
    "System.IO.FileAttributes": {"Directory"},
    "System.IO.IOException": set(),
    "System.IO.FileNotFoundException": set(),
    "System.IO.DirectoryNotFoundException": set(),
    "System.UnauthorizedAccessException": set(),
    "System.ComponentModel.Win32Exception": set(),
    "System.ServiceProcess.TimeoutException": set(),
    "System.Text.Encoding": {"UTF8"},
    "System.Convert": {"FromBase64String", "ToBase64String"},
    "System.BitConverter": {"ToString"},
    "System.Guid": {"NewGuid"},
    "System.DateTime": {"UtcNow"},
    "System.TimeSpan": {"Zero", "FromSeconds"},
    "System.Security.Cryptography.SHA256CryptoServiceProvider": set(),
    # PowerShell's own accelerators
    "string": set(),
    "int": set(),
    "double": set(),
    "ordered": set(),
    "byte[]": set(),
}
# Instance members (methods and properties) the templates may use, each present in .NET 4.6.2 or added by
# PowerShell 5.1 (ServiceController.StartType is 4.6.1; Exception.HResult public since 4.5).
INSTANCE_MEMBERS = {
    "GetString", "ToLowerInvariant", "IndexOfAny", "Dispose", "Read", "Length", "ComputeHash", "ToString",
    "AddSeconds", "WaitForStatus", "Refresh", "Start", "Stop", "Status", "StartType", "ServiceName",
    "DependentServices", "Count", "Exception", "InnerException", "Message", "HResult", "NativeErrorCode",
    "Scope", "ExecutionPolicy", "PSVersion", "SessionState", "LanguageMode", "timeout_s", "service", "path",
    "backup_path", "sha256", "expected_sha256", "content_b64", "folder", "name", "exists", "is_dir",
    "settings_path", "Value", "ObjectName",
}  # fmt: skip
# Parameters and values that exist only in PowerShell 6+.
PS7_PARAMETERS = {"-AsHashtable", "-AsByteStream", "-Parallel", "-NoEnumerate", "-SkipHttpErrorCheck"}
PS7_VALUES = {"utf8NoBOM", "utf8BOM"}
CODE_IN_TRY = {("::", "Replace"), (".", "Start"), (".", "Stop")}

TEMPLATES = {op: protocol.template(op) for op in protocol.OPERATIONS}


def _walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def _tree(op: str) -> tree_sitter.Node:
    return PARSER.parse(TEMPLATES[op].encode("utf-8")).root_node


def _text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8")


def _code_only(op: str) -> str:
    """The template with comments and string contents blanked (so their words never count as code)."""
    source = bytearray(TEMPLATES[op].encode("utf-8"))
    for node in _walk(_tree(op)):
        if node.type == "comment" or ("string" in node.type and node.child_count == 0):
            source[node.start_byte : node.end_byte] = b" " * (node.end_byte - node.start_byte)
    return source.decode("utf-8")


def _type_name(literal: tree_sitter.Node) -> str:
    name = _text(literal)[1:-1].strip()
    if name in STATIC_MEMBERS:
        return name
    return name if name.startswith("System.") else "System." + name


def _invocations(op: str) -> Iterator[tuple[tree_sitter.Node, str | None, str, str]]:
    """(node, type name or None, '::' or '.', member) of every member access and call."""
    for node in _walk(_tree(op)):
        if node.type not in ("invokation_expression", "member_access"):
            continue
        children = node.children
        for i, child in enumerate(children):
            if child.type == "member_name" and i > 0:
                operator = _text(children[i - 1])
                target = children[i - 2] if i >= 2 else None
                type_name = _type_name(target) if target is not None and target.type == "type_literal" else None
                yield node, type_name, operator, _text(child)


def _inside_try_body(node: tree_sitter.Node) -> bool:
    """Whether ``node`` is in the protected block of a try statement (not in its catch or finally)."""
    child, parent = node, node.parent
    while parent is not None:
        if parent.type == "try_statement" and child.type == "statement_block":
            return True
        if parent.type in ("function_statement", "catch_clause", "finally_clause"):
            return False
        child, parent = parent, parent.parent
    return False


def _block(text: str, name: str) -> str | None:
    match = re.search(rf"^# --- {re.escape(name)}\b.*?^# --- end of {re.escape(name)} ---$", text, re.S | re.M)
    return match.group(0) if match else None


# --------------------------------------------------------------------------- Windows PowerShell 5.1 lint


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_no_powershell_7_syntax(op: str) -> None:
    code = _code_only(op)
    for token in ("??", "?.", "&&", "||"):
        assert token not in code, f"{op}: PowerShell 7 operator {token!r}"
    assert not re.search(r"\s\?\s", code), f"{op}: ternary operator"


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_no_powershell_7_parameters(op: str) -> None:
    for node in _walk(_tree(op)):
        if node.type != "command":
            continue
        name = next((_text(c) for c in node.children if c.type == "command_name"), "")
        parameters = {_text(p) for p in _walk(node) if p.type == "command_parameter"}
        bad = {p for p in parameters if p.split(":")[0] in PS7_PARAMETERS}
        if name.lower() == "convertfrom-json":
            bad |= {p for p in parameters if p.lower().startswith("-depth")}
        assert not bad, f"{op}: {name} {sorted(bad)} exist only in PowerShell 6+"
    for value in PS7_VALUES:
        assert value.lower() not in TEMPLATES[op].lower(), f"{op}: {value} exists only in PowerShell 6+"


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_dotnet_types_and_members_are_in_the_allow_list(op: str) -> None:
    for node in _walk(_tree(op)):
        if node.type == "type_literal":
            assert _type_name(node) in STATIC_MEMBERS, f"{op}: type {_text(node)} is not on the .NET 4.6.2 list"
        if node.type == "command" and _text(node).lower().startswith("new-object"):
            created = _text(node).split()[1]
            assert _type_name_of(created) in STATIC_MEMBERS, f"{op}: New-Object {created}"
    for _, type_name, operator, member in _invocations(op):
        if operator == "::":
            assert type_name is not None and member in STATIC_MEMBERS[type_name], f"{op}: [{type_name}]::{member}"
        else:
            assert member in INSTANCE_MEMBERS, f"{op}: .{member} is not on the allow-list"


def _type_name_of(text: str) -> str:
    return text if text in STATIC_MEMBERS or text.startswith("System.") else "System." + text


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_every_start_stop_and_replace_is_inside_try(op: str) -> None:
    for node, _, operator, member in _invocations(op):
        if (operator, member) in CODE_IN_TRY and node.type == "invokation_expression":
            line = node.start_point[0] + 1
            assert _inside_try_body(node), f"{op}.ps1:{line}: {operator}{member}() outside a try block"


def test_the_lint_catches_what_it_should() -> None:
    """The rules above are not vacuous: each flags a template broken on purpose."""
    broken = {
        "ternary": "$x = $a ? 1 : 2",
        "null-coalescing": "$x = $a ?? 1",
        "pipeline chain": "Get-Item C:\\ && Get-Item D:\\",
    }
    original = TEMPLATES["host.info"]
    try:
        for what, line in broken.items():
            TEMPLATES["host.info"] = original + line + "\n"
            with pytest.raises(AssertionError):
                test_no_powershell_7_syntax("host.info")
            assert what
        TEMPLATES["host.info"] = original + "$d = '{}' | ConvertFrom-Json -AsHashtable\n"
        with pytest.raises(AssertionError):
            test_no_powershell_7_parameters("host.info")
        TEMPLATES["host.info"] = original + "$h = [Security.Cryptography.SHA256]::HashData($b)\n"
        with pytest.raises(AssertionError):
            test_dotnet_types_and_members_are_in_the_allow_list("host.info")
        TEMPLATES["host.info"] = original + "$svc.Start()\n"
        with pytest.raises(AssertionError):
            test_every_start_stop_and_replace_is_inside_try("host.info")
    finally:
        TEMPLATES["host.info"] = original


# --------------------------------------------------------------------------- the shared prologue and helpers


def test_the_shared_prologue_is_identical_in_every_template() -> None:
    prologues = {op: _block(text, "prologue") for op, text in TEMPLATES.items()}
    assert all(prologues.values()), [op for op, p in prologues.items() if not p]
    assert len(set(prologues.values())) == 1
    prologue = next(iter(prologues.values()))
    assert prologue is not None
    assert "$ErrorActionPreference = 'Stop'" in prologue
    assert "$ProgressPreference = 'SilentlyContinue'" in prologue  # progress records would reach stderr


@pytest.mark.parametrize(
    "helpers", ["helpers: paths", "helpers: read", "helpers: service lookup", "helpers: service control"]
)
def test_each_helper_block_is_identical_wherever_it_is_used(helpers: str) -> None:
    blocks = {op: _block(text, helpers) for op, text in TEMPLATES.items() if _block(text, helpers)}
    assert blocks, helpers
    assert len(set(blocks.values())) == 1, sorted(blocks)


# --------------------------------------------------------------------------- what the templates must do


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_failures_report_the_whole_exception_chain(op: str) -> None:
    code = _code_only(op)
    assert "$_.Exception.Message" not in TEMPLATES[op].split("# --- end of prologue ---")[1]
    top_catch = TEMPLATES[op].rstrip().rsplit("catch {", 1)[1]
    assert "Write-Failure $_.Exception" in top_catch, op
    prologue = _block(TEMPLATES[op], "prologue") or ""
    assert "InnerException" in prologue and "NativeErrorCode" in prologue
    assert code.count("Write-Failure") >= 2


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_hashing_and_reading_survive_fips_policy_and_a_writer(op: str) -> None:
    code = _code_only(op)
    assert "Get-FileHash" not in code  # a script function in 5.1: an execution policy can block it
    assert "SHA256]::Create" not in code  # throws under FIPS on .NET 4.6.2
    assert "ReadAllBytes" not in code  # FileShare.Read only: fails while the AccountServer writes
    if op in ("file.read", "file.replace"):
        read = _block(TEMPLATES[op], "helpers: read") or ""
        assert "SHA256CryptoServiceProvider" in read
        assert "[IO.FileShare]'ReadWrite, Delete'" in read


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_paths_are_checked_honestly(op: str) -> None:
    code = _code_only(op)
    assert "IsPathRooted" not in code  # accepts C:foo, \foo and UNC paths
    assert "Test-Path" not in code  # $false on access denied: shown as 'does not exist'
    for field in ("path", "backup_path", "folder"):
        if f"$Data.{field}" in code:
            variable = re.search(rf"\$(\w+) = \[string\]\$Data\.{field}\b", code)
            assert variable, (op, field)
            assert f"Assert-AbsolutePath ${variable.group(1)}" in code, (op, field)
    paths = _block(TEMPLATES[op], "helpers: paths")
    if paths:
        assert "'^[A-Za-z]:\\\\'" in paths and "GetFullPath" in paths
        assert "UnauthorizedAccessException" in paths and "access denied" in paths


def test_replace_is_retried_and_never_loses_the_file() -> None:
    text = TEMPLATES["file.replace"]
    code = _code_only("file.replace")
    replace = next(n for n, _, op, member in _invocations("file.replace") if (op, member) == ("::", "Replace"))
    ancestors = []
    parent = replace.parent
    while parent is not None:
        ancestors.append(parent.type)
        parent = parent.parent
    assert "for_statement" in ancestors, "the Replace call must be in a retry loop"
    assert "(1175, 1176, 1177, 32, 33)" in text
    assert "Start-Sleep" in code
    body = text.split("# --- end of helpers: read ---", 1)[1] if "# --- end of helpers: read ---" in text else ""
    assert body and "finally" not in body, "no finally block that deletes the temporary file"
    assert "[IO.File]::Move($tmp, $path)" in text and "[IO.File]::Copy($backup, $path)" in text
    assert "is MISSING" in text and "is unchanged" in text


def test_service_states_are_handled_explicitly() -> None:
    control = _block(TEMPLATES["service.stop"], "helpers: service control") or ""
    code = "".join(_code_only(op) for op in ("service.stop", "service.start", "service.restart"))
    assert "Stop-Service" not in code and "Start-Service" not in code  # -Force stops dependents; no deadline
    for text in ("StartPending", "StopPending", "Paused", "DependentServices", "StartType", "Disabled"):
        assert text in control, text
    assert "-ne 1056" in control  # already running: success
    assert "-ne 1062" in control  # already stopped: success
