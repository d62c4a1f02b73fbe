"""A run engine (store, service, worker, executor) over the simulated platform, and scripted people."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from actions.winrm import WinRMExecutor
from bot.config import Config, load_config
from bot.runs.machine import StepState
from bot.runs.rules import bot_executes
from bot.runs.service import RunService
from bot.runs.worker import Worker
from bot.store.db import Store
from sandbox.simulator import SimulatedPlatform
from tests.support.platform import running_platform, write_config

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"


@dataclass
class Engine:
    config: Config
    platform: SimulatedPlatform
    store: Store
    service: RunService
    worker: Worker
    state_dir: Path

    def operations(self) -> list[dict]:  # type: ignore[type-arg]
        path = self.state_dir / "operations.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def settings(self, host: str) -> bytes:
        sub = "AS_Service" if host.startswith("as-") else "SS_Service"
        return (self.state_dir / host / "C" / "ProgramData" / "Attix5 Pro" / sub / "Settings.xml").read_bytes()

    def services(self, host: str) -> dict[str, str]:
        return dict(json.loads((self.state_dir / host / "services.json").read_text()))

    def faults(self, host: str, **faults: object) -> None:
        (self.state_dir / host / "faults.json").write_text(json.dumps(faults))


@contextmanager
def engine(tmp_path: Path, store: Store | None = None, **config_overrides: object) -> Iterator[Engine]:
    config_path = write_config(tmp_path / "cfg", **config_overrides)
    state = tmp_path / "state"
    with running_platform(config_path, state) as platform:
        config = load_config(config_path)
        own_store = store is None
        store = store or Store(f"sqlite:///{tmp_path / 'bot.db'}")
        service = RunService(store, config)
        executor = WinRMExecutor()
        worker = Worker(service, executor)
        try:
            yield Engine(config, platform, store, service, worker, state)
        finally:
            worker.close()
            executor.close()
            if own_store:
                store.dispose()


def wait_tasks_consumed(eng: Engine, host: str, timeout: float = 5.0) -> None:
    folder = eng.state_dir / host / "C" / "ProgramData" / "Attix5 Pro" / "AS_Service" / "TaskQueue"
    deadline = time.monotonic() + timeout
    while any(folder.iterdir()):
        if time.monotonic() > deadline:
            raise AssertionError(f"task files still waiting on {host}: {[p.name for p in folder.iterdir()]}")
        time.sleep(0.05)


def drive(eng: Engine, run_id: str, *, choices: dict[str, str] | None = None, stop_at: str | None = None) -> None:
    """Click through the run as three people would: approve, Done, two approvers on deletes."""
    choices = choices or {}
    for _ in range(200):
        eng.worker.advance(run_id)
        view = eng.service.view(run_id)
        cur = view.current
        if cur is None or view.run.state != "active":
            return
        if stop_at and cur.step.id == stop_at:
            return
        step = cur.step
        if cur.state == StepState.FAILED:
            raise AssertionError(f"{step.id} failed: {cur.row.error}")
        if cur.state == StepState.AWAITING_APPROVAL:
            if step.risk == "destructive":
                eng.service.approve(run_id, step.id, BOB, **seen(eng.service, run_id, step.id))
                eng.service.approve(run_id, step.id, CAROL, **seen(eng.service, run_id, step.id))
            elif bot_executes(step):
                eng.service.approve(run_id, step.id, BOB, **seen(eng.service, run_id, step.id))
            else:
                eng.service.done(
                    run_id, step.id, BOB, choice=_choice(step, choices), **seen(eng.service, run_id, step.id)
                )
        elif cur.state == StepState.APPROVED and not bot_executes(step):
            eng.service.done(
                run_id, step.id, CAROL, choice=_choice(step, choices), **seen(eng.service, run_id, step.id)
            )
    raise AssertionError("run did not finish")


def _choice(step, choices: dict[str, str]) -> str | None:  # type: ignore[no-untyped-def]
    options = step.spec.choices
    if not options:
        return None
    return choices.get(step.id, options[0])


def seen(service: RunService, run_id: str, step_id: str) -> dict[str, object]:
    """What a person clicking the step's current message passes: its approval round and fingerprint."""
    row = service.view(run_id).step(step_id).row
    return {"round": row.attempt, "fingerprint": row.fingerprint or ""}
