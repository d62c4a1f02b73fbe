"""The text renderers (bot/render) are pure, and the runbook, report and renderer modules each read in one sitting.

Issue 13: the plan's text lives with the report's renderers, not in the runbook; rendering needs no database,
Slack client, WinRM or matplotlib (the picture is drawn in a child process); the runbook and the report are
packages split by responsibility, each module under ~400 lines with a one-sentence docstring.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from bot.render.report import markdown
from bot.report import Report, StepTiming
from tests.support.paths import ROOT

HEAVY = (
    "sqlalchemy",
    "pyodbc",
    "winrm",
    "requests",
    "slack_sdk",
    "matplotlib",
    "actions.winrm",  # actions' light modules (errors, hosts, guid) are what bot.errors and bot.config build on;
    "actions.preflight",  # the ones that open WinRM or ODBC connections are heavy
    "actions.storage_platform_db",
    "bot.store",
    "bot.runs.service",
)
RENDERERS = ["bot.render.plan", "bot.render.report", "bot.render.summary", "bot.render.timeline"]
PACKAGES = ["bot/render", "bot/report", "bot/runs/runbook"]


@pytest.mark.parametrize("module", RENDERERS)
def test_a_renderer_imports_no_database_slack_winrm_or_matplotlib(module: str) -> None:
    code = (
        f"import sys\nimport {module}\nheavy = {HEAVY!r}\n"
        "print('\\n'.join(sorted(k for k in sys.modules if any(k == h or k.startswith(h + '.') for h in heavy))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.split() == []


def test_the_report_renders_from_plain_data() -> None:
    run = {
        "id": "FO-1", "platform": "p", "direction": "failover", "site": "site-a", "partner": "site-b",
        "scope": "all", "storage": "", "rebuilt": False, "state": "completed", "initiator": "U0ALICE",
        "created_at": "2026-12-01T10:00:00+00:00", "finished_at": "2026-12-01T10:05:00+00:00", "abort_reason": None,
    }  # fmt: skip
    report = Report(run, [], [StepTiming("F1", "Stop it", outcome="succeeded", executing_s=3.0)], True, [])
    text = markdown(report, lambda u: {"U0ALICE": "alice"}.get(u, u))
    assert text.startswith("# FO-1: failover of site-a (partner site-b)\n")
    assert "- started by alice at 2026-12-01T10:00:00+00:00; state: **completed**" in text
    assert "- duration: 5 min 00 s" in text and "### F1 · Stop it — succeeded" in text
    assert report.to_markdown() == markdown(report)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_module_reads_in_one_sitting(package: str) -> None:
    for path in sorted((ROOT / package).glob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        assert len(text.splitlines()) <= 400, path
        assert ast.get_docstring(tree), path
        assert "from __future__ import annotations" in text, path


def test_the_runbooks_public_names_still_import_from_the_package() -> None:
    """Every public name of the old bot/runs/runbook.py imports from the package; the plan's text from bot.render."""
    import bot.render.plan as plan_text
    import bot.runs.runbook as runbook

    names = """RunbookError RunOptions StepSpec ConsoleObject Deletion deletion_line
        Target ResolvedStep Plan load_runbook parse_runbook parse_options resolve completion_note
        kb_lines Direction Scope DIRECTIONS SCOPES KINDS RISKS TARGETS VARIANTS ORIGINS OTP_OWNERS TASK_FILE ACTIONS
        MASTER_RETURNS_AT""".split()
    assert [n for n in names if not hasattr(runbook, n)] == []
    assert set(runbook.__all__) >= set(names)
    assert all(hasattr(plan_text, n) for n in ("format_plan", "format_plan_short", "mask_guids"))
