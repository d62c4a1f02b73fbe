"""Runbooks as data: the packaged failover/failback YAML, loaded, validated and resolved against the configuration.

model (the typed steps and plans), loading (YAML -> validated StepSpecs), options (what a run covers) and
resolution (a plan for one site); ``from bot.runs.runbook import X`` reaches every public name. The plan's text
lives with the other renderers, in bot.render.plan.
"""

from __future__ import annotations

from bot.runs.runbook.loading import ACTIONS, load_runbook, parse_runbook
from bot.runs.runbook.model import (
    KINDS,
    MASTER_RETURNS_AT,
    ORIGINS,
    OTP_OWNERS,
    RISKS,
    TARGETS,
    TASK_FILE,
    VARIANTS,
    ConsoleObject,
    Deletion,
    Plan,
    ResolvedStep,
    RunbookError,
    StepSpec,
    Target,
    deletion_line,
    kb_lines,
)
from bot.runs.runbook.options import (
    COMMAND_WORDS,
    DIRECTIONS,
    SCOPES,
    Direction,
    FailoverHistory,
    HistoryUnavailable,
    PastFailover,
    RunOptions,
    Scope,
    check_direction,
    command_word,
    direction_of,
    explain_options,
    options_from_stored,
    parse_options,
    stored_storage,
)
from bot.runs.runbook.resolution import completion_note, plan_for_command, resolve

__all__ = [
    "ACTIONS",
    "COMMAND_WORDS",
    "DIRECTIONS",
    "KINDS",
    "MASTER_RETURNS_AT",
    "ORIGINS",
    "OTP_OWNERS",
    "RISKS",
    "SCOPES",
    "TARGETS",
    "TASK_FILE",
    "VARIANTS",
    "ConsoleObject",
    "Deletion",
    "Direction",
    "FailoverHistory",
    "HistoryUnavailable",
    "PastFailover",
    "Plan",
    "ResolvedStep",
    "RunOptions",
    "RunbookError",
    "Scope",
    "StepSpec",
    "Target",
    "check_direction",
    "command_word",
    "completion_note",
    "deletion_line",
    "direction_of",
    "explain_options",
    "kb_lines",
    "load_runbook",
    "options_from_stored",
    "parse_options",
    "parse_runbook",
    "plan_for_command",
    "resolve",
    "stored_storage",
]
