"""The ``/failover`` slash command: parse, acknowledge at once, then let the engine check who may and act."""

from __future__ import annotations

import shlex
from typing import Any

from slack_bolt import Ack, App, Respond

from bot.blocks.text import escape_mrkdwn
from bot.engine.core import KNOWN_COMMANDS
from bot.errors import UsageError
from bot.listeners.common import BotContext, guarded, say

USAGE = """*Usage:* `/failover <command>`
• `start <site> [scope=all|account|storage] [storage=<name,...>]` — fail <site> over to its partner
• `failback <site> [scope=…] [storage=…] [rebuilt]` — bring <site> back as the primary
• `status [<run-id>]` — where the active (or last) run stands
• `plan start|failback <site> [options]` — the resolved runbook, changes nothing
• `check <site>` — read-only preflight of <site> and its partner
• `abort [<reason>]` — stop the active run (operators)
• `report [<run-id>]` — post the run's audit report in its thread
• `readiness` — the latest readiness results and open problems (`readiness now` runs a round)
• `help` — this message"""


def register(app: App, ctx: BotContext) -> None:
    """Bind the ``/failover`` listener to ``app``."""

    @app.command("/failover")
    def _failover(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        failover(ctx, ack, body, respond)


def failover(ctx: BotContext, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
    """Acknowledge first (Slack wants an answer within 3 s); the work is queued behind it."""
    ack()
    if (body.get("text") or "").lower().split()[:1] in (["check"], ["readiness"]):  # reach hosts: own pool
        if not ctx.background_read(work, ctx, body, respond):
            ctx.background(say, respond, "Too many checks are running right now; try again in a minute.")
    else:
        ctx.background(work, ctx, body, respond)


def work(ctx: BotContext, body: dict[str, Any], respond: Respond) -> None:
    """The queued part of a command: once per delivery, answered kindly whatever happens."""
    if not ctx.first_delivery(body):
        return
    with guarded(respond, body.get("user_id", "?"), "command"):
        handle(ctx, body, respond)


def handle(ctx: BotContext, body: dict[str, Any], respond: Respond) -> None:
    engine = ctx.engine
    user = body.get("user_id", "")
    channel = body.get("channel_id", "")
    text = body.get("text") or ""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"Could not read that command ({exc}).\n{USAGE}") from None
    if not words:
        raise UsageError(USAGE)
    sub, args = words[0].lower(), words[1:]
    if sub not in KNOWN_COMMANDS:
        raise UsageError(f"Unknown command `{sub}`.\n{USAGE}")
    engine.authorize(sub, user, channel)
    if sub not in ("start", "failback"):  # those are recorded in the chain of the run they open
        engine.audit_command(sub, args, user, channel, text)
    replies: list[str] = []
    if sub == "help":
        replies = [escape_mrkdwn(USAGE)]  # shows `<site>` as typed
    elif sub in ("start", "failback"):
        opened = engine.open_run("failover" if sub == "start" else "failback", args, user, channel)
        where = f"<{opened.link}|the thread>" if opened.link else "the thread in this channel"
        replies = [f"Opened *{opened.run_id}*: {opened.direction} of {opened.site}. Follow {where}."]
    elif sub == "status":
        replies = [engine.status(args)]
    elif sub == "plan":
        replies, share = engine.plan(args, user, channel)
        for reply in replies:
            say(respond, reply)
        refused = share()
        replies = [refused] if refused else []
    elif sub == "check":
        replies = engine.check(args)
    elif sub == "abort":
        run_id = engine.abort_active(user, " ".join(args) or "aborted with /failover abort")
        replies = [f"Aborted {run_id}."]
    elif sub == "report":
        replies = engine.report(args)
    elif sub == "readiness":
        replies = engine.readiness_text(args)
    for reply in replies:
        say(respond, reply)
