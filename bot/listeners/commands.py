"""The ``/failover`` slash command: parse, check who may, acknowledge at once, then act."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.blocks.cards import plan_summary, status_text
from bot.blocks.text import escape_mrkdwn
from bot.errors import PermissionDenied, UsageError, UserError
from bot.listeners.common import BotContext, guarded
from bot.runs import policy
from bot.store import audit
from bot.store.db import utcnow

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
    @app.command("/failover")
    def failover(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()  # first: Slack wants an answer within 3 s; the work is queued behind it
        if (body.get("text") or "").lower().split()[:1] in (["check"], ["readiness"]):  # reach hosts: own pool
            if not ctx.background_read(_work, ctx, body, respond):
                ctx.background(_reply, respond, "Too many checks are running right now; try again in a minute.")
        else:
            ctx.background(_work, ctx, body, respond)


def _work(ctx: BotContext, body: dict[str, Any], respond: Respond) -> None:
    if not ctx.first_delivery(body):
        return
    with guarded(ctx, respond, body.get("user_id", "?"), "command"):
        handle(ctx, body, respond)


def _reply(respond: Respond, text: str) -> None:
    respond(text=text, response_type="ephemeral", replace_original=False)


def _chunks(text: str, limit: int = 2800) -> list[str]:
    out, cur = [], ""
    for line in text.splitlines():
        if len(cur) + len(line) + 1 > limit:
            out.append(cur)
            cur = ""
        cur += line + "\n"
    return [*out, cur] if cur else out


def handle(ctx: BotContext, body: dict[str, Any], respond: Respond) -> None:
    user = body.get("user_id", "")
    channel = body.get("channel_id", "")
    try:
        words = shlex.split(body.get("text") or "")
    except ValueError as exc:
        raise UsageError(f"Could not read that command ({exc}).\n{USAGE}") from None
    if not words:
        raise UsageError(USAGE)
    sub, args = words[0].lower(), words[1:]
    if sub not in policy.READ_ONLY_COMMANDS | policy.OPERATOR_COMMANDS:
        raise UsageError(f"Unknown command `{sub}`.\n{USAGE}")
    settings = ctx.config.slack
    try:
        policy.check_channel(settings, channel)
        policy.check_command(settings, sub, user)
    except PermissionDenied as exc:
        ctx.service.refuse(None, user, f"/failover {sub}", str(exc))
        raise
    if sub not in ("start", "failback"):  # those are recorded in the chain of the run they open
        _audit_command(ctx, sub, args, user, channel, body.get("text") or "")
    if sub == "help":
        _reply(respond, escape_mrkdwn(USAGE))  # shows `<site>` as typed
    elif sub in ("start", "failback"):
        _start(ctx, "failover" if sub == "start" else "failback", args, user, channel, respond)
    elif sub == "status":
        _status(ctx, args, respond)
    elif sub == "plan":
        _plan(ctx, args, user, channel, respond)
    elif sub == "check":
        _check(ctx, args, respond)
    elif sub == "abort":
        _abort(ctx, args, user, respond)
    elif sub == "report":
        _report(ctx, args, respond)
    elif sub == "readiness":
        _readiness(ctx, args, respond)


def _audit_command(ctx: BotContext, sub: str, args: list[str], user: str, channel: str, text: str) -> None:
    """Every command is in the audit log: in the chain of the run it concerns, else in the "-" chain."""
    run_id = "-"
    if sub in ("status", "report") and args:
        try:
            run_id = ctx.service.get_run(args[0]).id
        except UsageError:
            run_id = "-"  # the command itself will say there is no such run
    else:
        active = ctx.service.active_run()
        run_id = active.id if active else "-"
    audit.record(
        ctx.store, run_id, user, "command", detail={"command": f"/failover {text}".strip(), "channel": channel}
    )


def _start(ctx: BotContext, direction: str, args: list[str], user: str, channel: str, respond: Respond) -> None:
    if not args:
        raise UsageError(
            f"Which site? `/failover {'start' if direction == 'failover' else 'failback'} <site>`; "
            f"sites: {', '.join(sorted(ctx.config.sites))}"
        )
    site, options = args[0], args[1:]
    try:
        run = ctx.service.open_run(direction, site, options, user, channel)
    except UserError as exc:
        ctx.service.refuse(None, user, f"/failover {direction} {site}", str(exc))
        raise
    audit.record(
        ctx.store,
        run.id,
        user,
        "command",
        detail={
            "command": f"/failover {'start' if direction == 'failover' else 'failback'} " + " ".join(args),
            "channel": channel,
        },
    )
    try:
        thread = ctx.presenter.open_thread(run.id)  # the status card first: without a thread there is no run
    except SlackApiError as exc:
        error = str(exc.response.get("error"))
        ctx.service.abort(run.id, user, f"Slack refused the status card in the channel ({error}); nothing was done")
        if error in ("not_in_channel", "channel_not_found", "is_archived"):
            raise UsageError(
                f"I cannot post in this channel ({error}), so {run.id} was closed before any step: nothing was "
                "done. Invite me (`/invite @failover-bot`) and type the command again."
            ) from None
        raise UsageError(
            f"Slack refused the run's status card ({error}), so {run.id} was closed before any step: nothing was "
            "done. The bot's log has the details."
        ) from None
    link = ctx.permalink(channel, thread)
    where = f"<{link}|the thread>" if link else "the thread in this channel"
    _reply(respond, f"Opened *{run.id}*: {direction} of {site}. Follow {where}.")
    ctx.changed(run.id)
    ctx.worker.kick(run.id)


def _pick_run(ctx: BotContext, args: list[str]) -> Any:
    if args:
        return ctx.service.get_run(args[0])
    run = ctx.service.active_run() or ctx.service.last_run()
    if run is None:
        raise UsageError("There is no run yet. `/failover start <site>` opens one.")
    return run


def _status(ctx: BotContext, args: list[str], respond: Respond) -> None:
    run = _pick_run(ctx, args)
    view = ctx.service.view(run.id)
    link = ctx.permalink(run.channel, run.thread_ts)
    _reply(respond, status_text(view, utcnow(), link, ctx.presenter.left(view)))


def _plan(ctx: BotContext, args: list[str], user: str, channel: str, respond: Respond) -> None:
    from bot.runs.runbook import format_plan, resolve

    if len(args) < 2 or args[0] not in ("start", "failback"):
        raise UsageError("`/failover plan start|failback <site> [options]`")
    direction = "failover" if args[0] == "start" else "failback"
    ctx.config.site(args[1])
    options, source = ctx.service.explain_options(direction, args[1], args[2:])
    plan = dataclasses.replace(resolve(ctx.config, direction, args[1], options), options_source=source)  # type: ignore[arg-type]
    # One line per step, never cut off; the full detail is `failover-bot plan` (response_url takes 5 posts).
    chunks = _chunks(plan_summary(plan, ctx.config, " ".join(args)))
    if len(chunks) > 5:
        raise UsageError(
            f"The plan has {len(plan.steps)} steps, too many to show here: `failover-bot plan {' '.join(args)}`."
        )
    for chunk in chunks:
        _reply(respond, chunk)
    # The full plan (every value and instruction, as `failover-bot plan` prints it) as a file in the channel.
    try:
        ctx.presenter.client.files_upload_v2(
            channel=channel,
            content=format_plan(plan, ctx.config),
            filename=f"plan-{args[0]}-{args[1]}.txt",
            title=f"Plan: {direction} {args[1]}",
            initial_comment=f"The full plan `/failover plan {escape_mrkdwn(' '.join(args))}`, asked for by <@{user}>",
        )
    except SlackApiError as exc:
        _reply(respond, f"Slack refused the full plan as a file ({exc.response.get('error')}); the summary is above.")


def _check(ctx: BotContext, args: list[str], respond: Respond) -> None:
    from actions.preflight import check_site, format_checks

    if not args:
        raise UsageError("`/failover check <site>`")
    ctx.config.site(args[0])
    results = check_site(ctx.config, args[0], executor=ctx.read_executor or ctx.worker.executor)
    verdict = "all checks passed" if all(r.ok for r in results) else "some checks FAILED"
    for chunk in _chunks(format_checks(results))[:4]:  # host output: inert
        _reply(respond, f"```{escape_mrkdwn(chunk)}```")
    _reply(respond, f"check {args[0]}: {verdict}")


def _abort(ctx: BotContext, args: list[str], user: str, respond: Respond) -> None:
    run = ctx.service.active_run()
    if run is None:
        raise UsageError("There is no active run to abort.")
    reason = " ".join(args) or "aborted with /failover abort"
    ctx.service.abort(run.id, user, reason)
    _reply(respond, f"Aborted {run.id}.")
    ctx.changed(run.id)


def _report(ctx: BotContext, args: list[str], respond: Respond) -> None:
    run = _pick_run(ctx, args)
    if run.thread_ts and ctx.reports is not None:
        ctx.reports.post(run.id)  # summary, then the full report and its timeline as files, in the thread
        _reply(respond, f"Posted the report of {run.id} in its thread.")
        return
    from bot.report import build_report

    chunks = _chunks(build_report(ctx.store, run.id).to_markdown())
    for chunk in chunks[:5]:
        _reply(respond, f"```{escape_mrkdwn(chunk)}```")


def _readiness(ctx: BotContext, args: list[str], respond: Respond) -> None:
    from bot.blocks.cards import escape
    from bot.readiness.watch import results_text

    if ctx.readiness is None:
        raise UsageError("Readiness is not available in this bot.")
    if args and args[0].lower() != "now" or len(args) > 1:
        raise UsageError("`/failover readiness [now]`")
    report = ctx.readiness.run_round() if args else ctx.readiness.latest()
    if args and report is None:
        _reply(respond, "A readiness round is running right now; its results follow shortly (`/failover readiness`).")
        return
    for chunk in _chunks(results_text(report))[:5]:
        _reply(respond, f"```{escape(chunk)}```")  # details come from the hosts
