"""The engine is the one front door: listeners are plain functions over it, and the hub is the only fan-out."""

from __future__ import annotations

from typing import Any

from bot.engine.fanout import from_worker, kicks
from bot.hub import ChangeHub
from bot.listeners import commands
from bot.listeners.common import BotContext


class _Worker:
    def __init__(self) -> None:
        self.kicked: list[str] = []

    def kick(self, run_id: str) -> None:
        self.kicked.append(run_id)


def test_a_change_kicks_the_worker_through_the_hub_but_the_workers_own_news_does_not() -> None:
    hub, worker, heard = ChangeHub(), _Worker(), []
    hub.subscribe(lambda run_id, what: heard.append((run_id, what)))
    hub.subscribe(kicks(worker))
    notify = from_worker(hub.publish)
    hub.publish("FO-1", "approved")  # a person's click, recorded by the engine
    notify("FO-1", "step F1 running")  # the worker's own progress: shown, but no second look
    assert heard == [("FO-1", "approved"), ("FO-1", "step F1 running")]
    assert worker.kicked == ["FO-1"]
    hub.publish("FO-1", "done")  # the flag does not outlive the worker's publication
    assert worker.kicked == ["FO-1", "FO-1"]


class _Engine:
    """Only what /failover status needs: a listener is tested alone, without Slack, a store or a worker."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def authorize(self, sub: str, user: str, channel: str) -> None:
        self.calls.append(("authorize", (sub, user, channel)))

    def audit_command(self, sub: str, args: list[str], user: str, channel: str, text: str) -> None:
        self.calls.append(("audit", (sub, tuple(args))))

    def status(self, args: list[str]) -> str:
        self.calls.append(("status", tuple(args)))
        return "FO-1 is at F3"


def test_a_command_listener_is_a_plain_function_over_the_engine() -> None:
    engine, replies = _Engine(), []
    ctx = BotContext(engine=engine, client=None)  # type: ignore[arg-type]
    try:
        commands.handle(
            ctx, {"user_id": "U1", "channel_id": "C1", "text": "status FO-1"}, lambda **kw: replies.append(kw)
        )
    finally:
        ctx.close()
    assert engine.calls == [
        ("authorize", ("status", "U1", "C1")),
        ("audit", ("status", ("FO-1",))),
        ("status", ("FO-1",)),
    ]
    assert [r["text"] for r in replies] == ["FO-1 is at F3"]
