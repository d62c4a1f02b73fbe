"""The execution errors: acting on a host or the StoragePlatform database failed, and the step fails with the message.

FailoverBotError                 base of every error this project raises on purpose (bot.errors adds UserError)
└── ExecutionError               acting on the platform failed; carries the host it concerns when known
    ├── HostUnreachable          connection refused / DNS / TLS / HTTP transport failure
    ├── AuthenticationFailed     WinRM credentials rejected (HTTP 401) or missing
    ├── OperationTimedOut        a remote operation passed its deadline
    ├── RemoteOperationFailed    the operation ran and reported failure (PowerShell's message)
    ├── SettingsXmlError         Settings.xml could not be read or edited safely (actions.settings_xml)
    └── DatabaseOperationFailed  the StoragePlatform database refused or did not match
        └── SlaveRowCount        no Slave AccountServer row, or several (B4b adds it in the Console)

Messages never carry credentials: the executor and the database translate their libraries' errors at the
boundary (``raise ... from exc``) with names and addresses only.
"""

from __future__ import annotations


class FailoverBotError(Exception):
    """Base of every error this project raises on purpose."""


class ExecutionError(FailoverBotError):
    """Acting on a host or database failed; carries the host it concerns when known."""

    def __init__(self, message: str, *, host: str | None = None) -> None:
        self.host = host
        super().__init__(f"{host}: {message}" if host else message)


class HostUnreachable(ExecutionError):
    """The host could not be reached (refused, unresolvable, TLS or HTTP transport failure)."""


class AuthenticationFailed(ExecutionError):
    """The host rejected the credentials, or there were none to send."""


class OperationTimedOut(ExecutionError):
    """A remote operation did not finish before its deadline."""


class RemoteOperationFailed(ExecutionError):
    """The remote operation ran and failed; the message is the remote error."""


class DatabaseOperationFailed(ExecutionError):
    """The StoragePlatform database operation failed or did not match what was expected."""


class SlaveRowCount(DatabaseOperationFailed):
    """No Slave AccountServer row, or several: nothing was changed (B4b adds the AccountServer in the Console)."""

    def __init__(self, count: int, message: str) -> None:
        super().__init__(message)
        self.count = count
