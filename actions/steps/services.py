"""Service steps: stop, start or restart a Redstor Windows service and wait for its state, with the role checks
that guard stopping a Master."""

from __future__ import annotations

from typing import Any

from actions import remote, settings_xml
from actions.base import Outcome, Step, StepContext, Target, target_host
from actions.errors import ExecutionError, RemoteOperationFailed
from actions.guid import guid_fact, mask_guid
from actions.hosts import Host
from actions.reads import is_running_master, read_settings

SERVICE_TIMEOUT_S = 60.0


def _service_name(ctx: StepContext, host: Host, step: Step) -> str:
    which = step.params.get("service") or host.role
    if which == "account_server":
        return ctx.config.redstor.account_server.service
    return ctx.config.redstor.storage_server.service


class ServiceAction:
    """Stop, start or restart a Windows service and wait for the state."""

    def __init__(self, verb: str) -> None:
        self.verb = verb

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = target_host(ctx, target)
        text = f"{self.verb.capitalize()} service {_service_name(ctx, host, step)} on {host.name} ({host.endpoint})"
        if step.params.get("expect_slave"):
            # part of the approved fingerprint: a role that changes before it runs voids the approval
            try:
                value = settings_xml.read_is_slave(read_settings(ctx, host).content)
                role = "a Slave (IsSlave True)" if value is True else "NOT a Slave (IsSlave " + str(value) + ")"
            except ExecutionError as exc:
                role = f"of unknown role ({str(exc).splitlines()[0][:120]})"
            text += f"; {host.name} is {role} now"
        if step.params.get("check_no_running_slave"):
            partner = ctx.as_s.name
            text += (
                f"; first check that no Slave AccountServer service is running and that {partner} is the running Master"
            )
        if step.params.get("read_guid"):
            text += f"; then read {host.name}'s ServerGuid for its one-time password"
        return text

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = target_host(ctx, target)
        service = _service_name(ctx, host, step)
        if step.params.get("expect_slave"):
            value = settings_xml.read_is_slave(read_settings(ctx, host).content)
            if value is not True:
                raise RemoteOperationFailed(
                    f"{host.name} is not a Slave (IsSlave {'absent' if value is None else value}): stopping it "
                    "would stop a Master. Nothing was changed.",
                    host=host.name,
                )
        if step.params.get("check_no_running_slave"):
            _check_no_running_slave(ctx, exclude=host)
            if not is_running_master(ctx, ctx.as_s):
                raise RemoteOperationFailed(
                    f"{ctx.as_s.name} is not the running Master (IsSlave False and service Running): stopping "
                    f"{host.name} would leave no Master. Nothing was changed.",
                    host=ctx.as_s.name,
                )
        op = {"stop": remote.stop_service, "start": remote.start_service, "restart": remote.restart_service}[self.verb]
        res = op(ctx.executor, host, service, SERVICE_TIMEOUT_S)
        facts: dict[str, Any] = {}
        summary = f"{service} on {host.name}: {res.state}" + ("" if res.changed else " (already)")
        if step.params.get("read_guid"):
            guid = settings_xml.read_server_guid(read_settings(ctx, host).content)
            facts[guid_fact(host.name)] = guid
            summary += f"; ServerGuid read ({mask_guid(guid)})"
        return Outcome(summary, {"service": service, "state": res.state, "changed": res.changed}, facts)

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        if self.verb == "restart":
            return None  # a restart that never happened looks the same as one that did
        host = target_host(ctx, target)
        state = remote.query_service(ctx.executor, host, _service_name(ctx, host, step))
        return state == ("Stopped" if self.verb == "stop" else "Running")


def _check_no_running_slave(ctx: StepContext, *, exclude: Host) -> None:
    for site in ctx.config.sites.values():
        host = site.account_server
        if host.name == exclude.name:
            continue
        if settings_xml.read_is_slave(read_settings(ctx, host).content) is True:
            state = remote.query_service(ctx.executor, host, ctx.config.redstor.account_server.service)
            if state != "Stopped":
                raise RemoteOperationFailed(
                    f"Slave AccountServer {host.name} is {state}; no Slave AccountServer may be running", host=host.name
                )
