"""The AccountServers' own behaviour: a running Master consumes its task files."""

from __future__ import annotations

import threading
import time

from bot.config import Config, Host
from sandbox.simulator.host_state import HostState, PathRejected
from sandbox.simulator.oplog import OperationLog

TASK_FILE = "Failover.UpdateSettingsOnSS"
TICK_S = 0.2


class AccountServerModel:
    """What one simulated AccountServer does by itself, one tick at a time."""

    def __init__(self, host: Host, state: HostState, config: Config, log: OperationLog) -> None:
        self.host = host
        self.state = state
        self.config = config
        self.log = log
        account = config.redstor.account_server
        self.service = account.service
        self.settings_path = config.windows_path(account.settings)
        self.task_queue = config.windows_path(account.task_queue)

    def is_running_master(self) -> bool:
        if self.state.service_state(self.service) != "Running":
            return False
        settings = self.state.read_settings(self.settings_path)
        return settings is not None and not settings.is_slave

    def tick(self) -> None:
        """A running Master updates the accounts and deletes the task file; others leave it waiting."""
        try:
            task = self.state.resolve(self.task_queue + "\\" + TASK_FILE)
        except PathRejected:
            return
        if not task.is_file() or not self.is_running_master():
            return
        faults = self.state.faults()
        if not faults.consume:
            return  # faults.json "consume": false — this AccountServer never consumes its task files
        if faults.consume_delay_s and time.time() - task.stat().st_mtime < faults.consume_delay_s:
            return  # faults.json "consume_delay_s": not yet
        try:
            task.unlink()
        except FileNotFoundError:
            return
        self.log.record(self.host.name, "taskqueue.consume", f"{self.task_queue}\\{TASK_FILE}", "ok", changed=True)


def run_account_servers(models: list[AccountServerModel], stopping: threading.Event) -> None:
    """Tick every AccountServer about five times a second until ``stopping`` is set."""
    while not stopping.wait(TICK_S):
        for model in models:
            try:
                model.tick()
            except OSError:
                continue  # a file raced with the bot or a person editing it; the next tick sees it again
