"""The failover-bot exception hierarchy, split by who has to act on the error.

FailoverBotError                 (actions.errors)
├── UserError                    the person asked for something wrong; shown to them, exit 2
│   ├── ConfigError              the configuration file (names file, field path, what is wrong)
│   ├── UsageError               malformed command or arguments
│   ├── PermissionDenied         the person lacks the role for this command or button
│   └── StateConflict            the run or step is not in a state that allows this (stale click)
└── ExecutionError               acting on the platform failed; the step fails with this message
    └── ...                      defined and drawn in actions.errors (HostUnreachable, AuthenticationFailed,
                                 OperationTimedOut, RemoteOperationFailed, DatabaseOperationFailed, ...)

The execution errors live in ``actions`` (which imports nothing from ``bot``) and are re-exported here, so
``from bot.errors import ExecutionError`` names the one class ``actions`` raises.
"""

from __future__ import annotations

import re

from actions.errors import (
    AuthenticationFailed,
    DatabaseOperationFailed,
    ExecutionError,
    FailoverBotError,
    HostUnreachable,
    OperationTimedOut,
    RemoteOperationFailed,
)

__all__ = [
    "AuthenticationFailed",
    "ConfigError",
    "DatabaseOperationFailed",
    "ExecutionError",
    "FailoverBotError",
    "HostUnreachable",
    "OperationTimedOut",
    "PermissionDenied",
    "RemoteOperationFailed",
    "StateConflict",
    "UsageError",
    "UserError",
]


class UserError(FailoverBotError):
    """Something the person can fix by asking differently; nothing was changed."""

    exit_code = 2


class ConfigError(UserError):
    """The configuration file is wrong: names the file, the field path and the problem."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file = file
        self.field = field
        self.problem = problem
        where = f"{file}: {field}" if field else file
        super().__init__(_one_line(f"{where}: {problem}"))


def _one_line(text: str) -> str:
    """``text`` on one line (YAML and pydantic messages, and keys from the file, may hold line breaks)."""
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


class UsageError(UserError):
    """A command or its arguments are malformed."""


class PermissionDenied(UserError):
    """The person may not run this command or press this button."""


class StateConflict(UserError):
    """The run or step is not in a state that allows the request (finished, superseded, raced)."""
