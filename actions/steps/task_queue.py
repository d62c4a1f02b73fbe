"""The task-queue step: drop Failover.UpdateSettingsOnSS into the current Master's queue and wait until consumed."""

from __future__ import annotations

import time

from actions import remote
from actions.base import Outcome, Step, StepContext, Target
from actions.errors import ExecutionError, RemoteOperationFailed
from actions.hosts import Host
from actions.reads import current_master, task_queue_path

TASK_POLL_S = 0.5  # how often the bot looks whether the AccountServer consumed its task file


class DropTaskFile:
    """Drop Failover.UpdateSettingsOnSS into the current Master's task queue."""

    def _master(self, ctx: StepContext, step: Step, target: Target) -> Host:
        if step.spec.target == "current_master" or target.host is None:
            return current_master(ctx)  # whichever AccountServer is Master at this moment
        return ctx.host(target.host)

    def preview(self, ctx: StepContext, step: Step, target: Target) -> str:
        try:
            host = self._master(ctx, step, target)
            where = f"{host.name} ({host.endpoint}), the current Master"
        except ExecutionError as exc:
            where = f"the current Master AccountServer (not determined yet: {exc})"
        return f"Create the empty file {remote.TASK_FILE} in {task_queue_path(ctx.config)} on {where}"

    def run(self, ctx: StepContext, step: Step, target: Target) -> Outcome:
        host = self._master(ctx, step, target)
        folder = task_queue_path(ctx.config)
        res = remote.drop_task_file(ctx.executor, host, folder)
        waited = self._await_consumed(ctx, host, folder)
        dropped = "was already waiting in" if res.already_waiting else "dropped in"
        return Outcome(
            f"{remote.TASK_FILE} {dropped} {host.name}'s task queue and consumed by the AccountServer "
            f"(after {waited:.1f} s)",
            {
                "host": host.name,
                "created": not res.already_waiting,
                "already_waiting": res.already_waiting,
                "consumed": True,
                "waited_s": round(waited, 1),
            },
        )

    def _await_consumed(self, ctx: StepContext, host: Host, folder: str) -> float:
        """Poll until the AccountServer has consumed (deleted) the task file, at most task_queue_timeout_s."""
        timeout = ctx.config.redstor.account_server.task_queue_timeout_s
        started = time.monotonic()
        while remote.task_file_waiting(ctx.executor, host, folder):
            waited = time.monotonic() - started
            if waited >= timeout:
                service = ctx.config.redstor.account_server.service
                raise RemoteOperationFailed(
                    f"{folder}\\{remote.TASK_FILE} on {host.name} was not consumed within {timeout:g} s. Check that "
                    f"{service} on {host.name} is Running as the Master (IsSlave False) and that {folder} is the "
                    "task queue that AccountServer reads (redstor.account_server.task_queue). When it has been "
                    "consumed, Retry (it is not dropped twice) or two approvers Mark done.",
                    host=host.name,
                )
            time.sleep(min(TASK_POLL_S, max(0.05, timeout - waited)))
        return time.monotonic() - started

    def probe(self, ctx: StepContext, step: Step, target: Target) -> bool | None:
        return None  # dropped and consumed, dropped and waiting, or never dropped: a read cannot prove consumption
