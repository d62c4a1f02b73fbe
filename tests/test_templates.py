"""Every PowerShell template parses cleanly and follows the wire format of actions.protocol."""

from __future__ import annotations

import base64
import json
import re
from importlib import resources

import pytest
import tree_sitter
import tree_sitter_powershell

from actions import protocol

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))

QUEUE: dict[str, object] = {
    "folder": r"C:\ProgramData\Attix5 Pro\AS_Service\TaskQueue",
    "name": "Failover.UpdateSettingsOnSS",
}

SAMPLE_DATA: dict[str, dict[str, object]] = {
    "host.info": {},
    "host.preflight": {
        "service": "Attix5ProAccountServer",
        "settings_path": r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml",
    },
    "service.query": {"service": "Attix5ProAccountServer"},
    "service.stop": {"service": "Attix5ProAccountServer", "timeout_s": 60},
    "service.start": {"service": "Attix5ProAccountServer", "timeout_s": 60},
    "service.restart": {"service": "Attix5ProAccountServer", "timeout_s": 60},
    "file.read": {"path": r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml"},
    "file.replace": {
        "path": r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml",
        "content_b64": base64.b64encode("<Settings>\u00e9'$`\"</Settings>".encode()).decode(),
        "sha256": "0" * 64,
        "expected_sha256": "1" * 64,
        "backup_path": r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml.20240101T000000Z.bak",
    },
    "path.test": {"path": r"C:\ProgramData\Attix5 Pro\AS_Service\TaskQueue"},
    "taskqueue.drop": QUEUE,
    "taskqueue.status": QUEUE,
}


def syntax_problems(source: str, name: str) -> list[str]:
    """Every ERROR or MISSING node of ``source`` as 'name:line:column: what'."""
    tree = PARSER.parse(source.encode("utf-8"))
    problems: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            line, column = node.start_point
            what = f"missing {node.type!r}" if node.is_missing else f"syntax error near {(node.text or b'')[:40]!r}"
            problems.append(f"{name}:{line + 1}:{column + 1}: {what}")
        stack.extend(node.children)
    return sorted(problems)


def test_every_operation_has_a_template_and_nothing_else_is_there() -> None:
    files = {p.name for p in resources.files("actions.scripts").iterdir() if p.name.endswith(".ps1")}
    assert files == {f"{op}.ps1" for op in protocol.OPERATIONS}
    assert set(SAMPLE_DATA) == set(protocol.OPERATIONS)


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_template_parses_without_errors(op: str) -> None:
    assert syntax_problems(protocol.template(op), f"{op}.ps1") == []


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_rendered_script_parses_without_errors(op: str) -> None:
    assert syntax_problems(protocol.render(op, SAMPLE_DATA[op]), f"{op}.ps1 (rendered)") == []


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_template_follows_the_wire_format(op: str) -> None:
    text = protocol.template(op)
    lines = text.splitlines()
    assert lines[0] == f"# op: {op}"
    assert lines[1] == f"$DataB64 = '{protocol.DATA_PLACEHOLDER}'"
    assert text.count(protocol.DATA_PLACEHOLDER) == 1
    assert sum(1 for ln in lines if ln.lstrip().startswith("$DataB64 =")) == 1
    assert "$ErrorActionPreference = 'Stop'" in text
    # host.info decodes no data: it must answer under Constrained Language Mode, which blocks [Convert].
    assert ("ConvertFrom-Json" in text or op == "host.info") and "ConvertTo-Json -Compress" in text
    assert "exit 1" in text
    # Paths go to cmdlets literally: -Path would expand wildcards such as [ ] in folder names.
    assert not re.search(r"\s-Path\b", text)
    assert text.isascii(), "templates travel over stdin; keep them ASCII"


@pytest.mark.parametrize("op", protocol.OPERATIONS)
def test_render_and_parse_round_trip(op: str) -> None:
    script = protocol.render(op, SAMPLE_DATA[op])
    assert protocol.DATA_PLACEHOLDER not in script
    assert protocol.parse(script) == (op, SAMPLE_DATA[op])


def test_data_cannot_inject_code() -> None:
    hostile = {"path": "C:\\x'; Remove-Item -Recurse C:\\ ; '$(whoami)`"}
    script = protocol.render("file.read", hostile)
    data_line = script.splitlines()[1]
    assert re.fullmatch(r"\$DataB64 = '[A-Za-z0-9+/=]*'", data_line)
    assert json.loads(base64.b64decode(data_line.split("'")[1])) == hostile
    assert protocol.parse(script)[1] == hostile


def test_bootstrap_parses_without_errors() -> None:
    assert syntax_problems(protocol.BOOTSTRAP, "BOOTSTRAP") == []
    decoded = base64.b64decode(protocol.encoded_bootstrap()).decode("utf-16-le")
    assert decoded == protocol.BOOTSTRAP


def test_the_check_catches_a_broken_script() -> None:
    good = protocol.template("service.stop")
    broken = good.replace("if ($left -lt [TimeSpan]::Zero) {", "if ($left -lt [TimeSpan]::Zero) ", 1)
    assert broken != good
    problems = syntax_problems(broken, "service.stop.ps1")
    assert problems, "an unbalanced brace must be reported"
    assert all(p.startswith("service.stop.ps1:") for p in problems)


def test_the_check_names_the_line_of_an_unclosed_string() -> None:
    script = "# op: host.info\n$DataB64 = 'abc'\n$x = \"unclosed\n"
    problems = syntax_problems(script, "bad.ps1")
    assert problems and problems[0].startswith("bad.ps1:3:")
