"""Settings.xml steps: set IsSlave byte-exactly, read a ServerGuid, check that an AccountServer is a Slave."""

from __future__ import annotations

from typing import Any

from actions import remote, settings_xml
from actions.base import Outcome, Step, StepContext, Target, target_host
from actions.errors import ExecutionError, RemoteOperationFailed
from actions.guid import guid_fact, mask_guid
from actions.reads import read_settings, settings_path


class SetIsSlave:
    """Set IsSlave in an AccountServer's Settings.xml; every other byte stays as it was."""

    def _new(self, ctx: StepContext, step: Step, old: bytes) -> bytes:
        return settings_xml.set_is_slave(
            old,
            bool(step.params["value"]),
            add_if_absent=bool(step.params.get("add_if_absent", False)),
            attributes=step.params.get("attributes") or None,
        )

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = target_host(ctx, target)
        path = settings_path(ctx.config, host)
        try:
            old = read_settings(ctx, host).content
        except ExecutionError as exc:
            return f"Set IsSlave to {step.params['value']} in {path} on {host.name} (cannot read it now: {exc})"
        new = self._new(ctx, step, old)
        if new == old:
            return f"{path} on {host.name} already has IsSlave {step.params['value']}; nothing to change."
        return settings_xml.settings_change(old, new, filename=f"{host.name}:{path}")

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = target_host(ctx, target)
        path = settings_path(ctx.config, host)
        current = read_settings(ctx, host)
        new = self._new(ctx, step, current.content)
        if new == current.content:
            return Outcome(f"IsSlave already {step.params['value']} on {host.name}", {"changed": False})
        res = remote.replace_file(ctx.executor, host, path, new, current.sha256)
        return Outcome(
            f"IsSlave set to {step.params['value']} on {host.name}; original kept as {res.backup_path}",
            {"changed": res.changed, "backup_path": res.backup_path},
        )

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        host = target_host(ctx, target)
        value = settings_xml.read_is_slave(read_settings(ctx, host).content)
        return (value is True) if step.params["value"] else (value in (None, False))


class ReadGuid:
    """Read a server's ServerGuid (its one-time password source); read-only."""

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = target_host(ctx, target)
        return f"Read ServerGuid from {settings_path(ctx.config, host)} on {host.name} (kept by the bot, shown masked)"

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = target_host(ctx, target)
        guid = settings_xml.read_server_guid(read_settings(ctx, host).content)
        return Outcome(f"ServerGuid of {host.name}: {mask_guid(guid)}", {}, {guid_fact(host.name): guid})

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return guid_fact(target_host(ctx, target).name) in ctx.facts


class CheckIsSlave:
    """R1b: the freshly installed AccountServer must be a Slave (IsSlave True) before it is added; read-only."""

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        host = target_host(ctx, target)
        return f"Read IsSlave in {settings_path(ctx.config, host)} on {host.name}: it must be True (read-only)"

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = target_host(ctx, target)
        content = read_settings(ctx, host).content
        value = settings_xml.read_is_slave(content)
        if value is not True:
            found = "has no IsSlave element (absent means Master)" if value is None else "has IsSlave False (Master)"
            raise RemoteOperationFailed(
                f"{settings_path(ctx.config, host)} on {host.name} {found}: adding it now would make two Masters. "
                "Set <IsSlave>True</IsSlave> in it, then Retry.",
                host=host.name,
            )
        facts: dict[str, Any] = {}
        summary = f"{host.name} is a Slave (IsSlave True)"
        if step.params.get("read_guid"):
            guid = settings_xml.read_server_guid(content)
            facts[guid_fact(host.name)] = guid
            summary += f"; ServerGuid read ({mask_guid(guid)})"
        return Outcome(summary, {"is_slave": True}, facts)

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return settings_xml.read_is_slave(read_settings(ctx, target_host(ctx, target)).content) is True
