"""Windows services on a simulated host, as the templates drive them: query, stop, start, restart, and waits.

Starting a Master AccountServer whose database row is still the Slave's promotes it, as Redstor does.
"""

from __future__ import annotations

import re
import time
from typing import Any

from sandbox.simulator.operation_base import HostContext, OperationFailed, Outcome, timeout_of

_WILDCARD = re.compile(r"[*?\[\]]")

_SETTLED = {"StartPending": "Running", "ContinuePending": "Running", "StopPending": "Stopped", "PausePending": "Paused"}


def service_named(ctx: HostContext, data: dict[str, Any]) -> str:
    name = data.get("service")
    if not isinstance(name, str) or not name or _WILDCARD.search(name):
        raise OperationFailed(f"invalid service name '{name}': wildcard characters are not allowed")
    found = [s for s in ctx.state.services() if s.lower() == name.lower()]
    if len(found) != 1:
        raise OperationFailed(f"expected exactly one service named '{name}', found {len(found)}")
    return found[0]


def service_state(ctx: HostContext, name: str) -> str:
    """The state now: a stuck fault holds a pending state; a pending state without one settles at once."""
    state = ctx.state.service_state(name) or "Stopped"
    if ctx.state.faults().stuck_state(name) is None and state in _SETTLED:
        state = _SETTLED[state]
        ctx.state.set_service_state(name, state)
    return state


def _wait(ctx: HostContext, name: str, wanted: str, deadline: float, verb: str, limit: float) -> None:
    """Wait-Status: wait until the service is in ``wanted`` (a stuck fault holds it), else fail."""
    while True:
        stuck = ctx.state.faults().stuck_state(name)
        if stuck is None:
            state = service_state(ctx, name)
            if state != wanted:
                ctx.state.set_service_state(name, wanted)
            return
        if stuck == wanted:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.stopping.is_set():
            raise OperationFailed(f"service '{name}' did not {verb} within {limit:g} s: stuck in {stuck}")
        ctx.stopping.wait(min(0.1, remaining))


def service_query(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = service_named(ctx, data)
    return Outcome({"service": name, "state": service_state(ctx, name)})


def _stop(ctx: HostContext, name: str, timeout: float) -> None:
    """Stop-OneService."""
    deadline = time.monotonic() + timeout
    state = service_state(ctx, name)
    if state in ("StartPending", "ContinuePending"):  # stopping a starting service fails (1061): wait first
        _wait(ctx, name, "Running", deadline, "start", timeout)
        state = "Running"
    if state not in ("Stopped", "StopPending"):
        faults = ctx.state.faults()
        running = [d for d in faults.dependents_of(name) if (ctx.state.service_state(d) or "Running") != "Stopped"]
        if running:
            raise OperationFailed(
                f"service '{name}' has running dependent services: {', '.join(running)}; stop them first"
            )
        if faults.stuck_state(name) is None:
            ctx.state.set_service_state(name, "Stopped")
    _wait(ctx, name, "Stopped", deadline, "stop", timeout)


def _start(ctx: HostContext, name: str, timeout: float) -> None:
    """Start-OneService."""
    deadline = time.monotonic() + timeout
    state = service_state(ctx, name)
    if state in ("Paused", "PausePending", "ContinuePending"):
        raise OperationFailed(
            f"service '{name}' is {state}: resume or stop it first; the bot does not start a paused service"
        )
    if state == "StopPending":  # starting a stopping service fails (1061): wait until it has stopped
        _wait(ctx, name, "Stopped", deadline, "stop", timeout)
        state = "Stopped"
    if state == "Stopped":
        faults = ctx.state.faults()
        if faults.start_type_of(name).lower() == "disabled":
            raise OperationFailed(f"service '{name}' is Disabled (its start type): set it to Automatic or Manual first")
        if any(s.lower() == name.lower() for s in faults.logon_failure):
            cannot = f"Cannot start service {name} on computer '.'."
            raise OperationFailed(
                f'Exception calling "Start" with "0" argument(s): "{cannot}" <- {cannot} <- '
                "The service did not start due to a logon failure (Win32 error 1069)"
            )
        if faults.stuck_state(name) is None:
            ctx.state.set_service_state(name, "Running")
    _wait(ctx, name, "Running", deadline, "start", timeout)
    if ctx.host.role == "account_server" and name.lower() == ctx.config.redstor.account_server.service.lower():
        _account_server_started(ctx)


def _account_server_started(ctx: HostContext) -> None:
    """A Master AccountServer whose row is the Slave's takes over the database (promoted Slave)."""
    settings_path = ctx.config.windows_path(ctx.config.redstor.account_server.settings)
    settings = ctx.state.read_settings(settings_path)
    if settings is not None and settings.is_slave:
        ctx.on_slave_started(ctx.host.name)
        return
    if settings is None or not settings.server_guid:
        return
    if ctx.database.promote_account_server(settings.server_guid):
        ctx.on_promoted(ctx.host.name, settings.server_guid)


def service_stop(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = service_named(ctx, data)
    timeout = timeout_of(data)
    changed = service_state(ctx, name) != "Stopped"
    _stop(ctx, name, timeout)
    return Outcome({"service": name, "state": service_state(ctx, name), "changed": changed}, changed)


def service_start(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = service_named(ctx, data)
    timeout = timeout_of(data)
    changed = service_state(ctx, name) != "Running"
    _start(ctx, name, timeout)
    return Outcome({"service": name, "state": service_state(ctx, name), "changed": changed}, changed)


def service_restart(ctx: HostContext, data: dict[str, Any]) -> Outcome:
    name = service_named(ctx, data)
    timeout = timeout_of(data)
    _stop(ctx, name, timeout)
    _start(ctx, name, timeout)
    return Outcome({"service": name, "state": service_state(ctx, name)}, True)
