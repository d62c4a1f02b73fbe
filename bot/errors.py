"""The failover-bot exception hierarchy, split by who has to act on the error.

FailoverBotError
├── UserError                 the person asked for something wrong; shown to them, exit 2
│   ├── ConfigError           the configuration file (names file, field path, what is wrong)
│   ├── UsageError            malformed command or arguments
│   ├── PermissionDenied      the person lacks the role for this command or button
│   └── StateConflict         the run or step is not in a state that allows this (stale click)
└── ExecutionError            acting on the platform failed; the step fails with this message
    ├── HostUnreachable       connection refused / DNS / TLS / HTTP transport failure
    ├── AuthenticationFailed  WinRM credentials rejected (HTTP 401)
    ├── OperationTimedOut     a remote operation passed its deadline
    ├── RemoteOperationFailed the operation ran and reported failure (PowerShell's message)
    └── DatabaseOperationFailed  the StoragePlatform database refused or did not match
"""

from __future__ import annotations

import re


class FailoverBotError(Exception):
    """Base of every error this project raises on purpose."""


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


class ExecutionError(FailoverBotError):
    """Acting on a host or database failed; carries the host it concerns when known."""

    def __init__(self, message: str, *, host: str | None = None) -> None:
        self.host = host
        super().__init__(f"{host}: {message}" if host else message)


class HostUnreachable(ExecutionError):
    """The host could not be reached (refused, unresolvable, TLS or HTTP transport failure)."""


class AuthenticationFailed(ExecutionError):
    """The host rejected the credentials."""


class OperationTimedOut(ExecutionError):
    """A remote operation did not finish before its deadline."""


class RemoteOperationFailed(ExecutionError):
    """The remote operation ran and failed; the message is the remote error."""


class DatabaseOperationFailed(ExecutionError):
    """The StoragePlatform database operation failed or did not match what was expected."""
