"""RunEngine: every operation on runs (open, vote, abort, reveal, check, plan, status, report, readiness) in one place.

Each call goes to the run service, which records the change and its audit events in its own transaction,
and then publishes the change on the one ChangeHub; whoever shows, reminds, reports or executes hears of
it there. What leaves the engine is text, Block Kit and plain values, never database rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import IntegrityError

from bot.blocks.plan import plan_summary
from bot.blocks.status import status_text
from bot.blocks.text import escape_mrkdwn
from bot.config import Config
from bot.engine.fanout import Publish
from bot.engine.offline import preflight
from bot.engine.votes import Votes
from bot.errors import PermissionDenied, UsageError, UserError
from bot.runs import policy
from bot.runs.runbook import command_word
from bot.runs.service import RunService
from bot.store import audit
from bot.store.db import Store, utcnow
from bot.store.models import ProcessedDelivery, Run

if TYPE_CHECKING:
    from bot.presenter import Presenter
    from bot.readiness.watch import ReadinessWatch
    from bot.reporting import ReportPoster
    from bot.runs.worker import Worker

log = logging.getLogger(__name__)

KNOWN_COMMANDS = policy.READ_ONLY_COMMANDS | policy.OPERATOR_COMMANDS


@dataclass(frozen=True)
class Opened:
    """A run just opened, and where its thread is."""

    run_id: str
    direction: str
    site: str
    link: str | None


def chunks(text: str, limit: int = 2800) -> list[str]:
    """Whole lines, at most ``limit`` characters a piece (a reply in Slack holds about 3,000)."""
    out, cur = [], ""
    for line in text.splitlines():
        if len(cur) + len(line) + 1 > limit:
            out.append(cur)
            cur = ""
        cur += line + "\n"
    return [*out, cur] if cur else out


class RunEngine(Votes):
    """The one front door to runs. Listeners, the CLI and the scheduler call it; it never speaks Slack's wire."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        service: RunService,
        publish: Publish,
        worker: Worker | None = None,
        presenter: Presenter | None = None,
        client: WebClient | None = None,
        readiness: ReadinessWatch | None = None,
        reports: ReportPoster | None = None,
        read_executor: Any = None,
    ) -> None:
        self.config = config
        self.store = store
        self.service = service
        self.on_change = publish  # the ChangeHub's publish: the only fan-out of a change
        self.worker = worker
        self.presenter = presenter
        self.client = client
        self.readiness = readiness
        self.reports = reports
        self.read_executor = read_executor  # /failover check's own connections: never a step's host lock
        self._permalinks: dict[str, str] = {}

    # ------------------------------------------------------------------ the fan-out

    def changed(self, run_id: str, what: str = "") -> None:
        """``run_id`` changed (its events are recorded): tell the hub, which tells every subscriber once."""
        self.on_change(run_id, what)

    def start_up(self) -> list[str]:
        """Reconcile runs a previous process left unfinished; bring the active run's thread and worker along."""
        lines = self.worker.recover() if self.worker is not None else []
        active = self.service.active_run()
        if active is not None:
            self.changed(active.id, "start-up")
        return lines

    # ------------------------------------------------------------------ deliveries and refusals

    def first_delivery(self, key: str | None) -> bool:
        """False for a Slack retry or a replayed click of a delivery already handled (it then does nothing)."""
        if key is None:
            return True
        try:
            with self.store.session() as s:
                s.add(ProcessedDelivery(key=key[:200], created_at=utcnow()))
        except IntegrityError:
            log.info("ignoring a repeated delivery %s", key)
            return False
        return True

    def refuse(self, run_id: str | None, user: str, action: str, reason: str, step_id: str | None = None) -> bool:
        """Audit a refused request (rate-limited per person by the service)."""
        return self.service.refuse(run_id, user, action, reason, step_id=step_id)

    # ------------------------------------------------------------------ commands

    def authorize(self, sub: str, user: str, channel: str) -> None:
        """May ``user`` type ``/failover <sub>`` in ``channel``? A refusal is audited and raised."""
        settings = self.config.slack
        try:
            policy.check_channel(settings, channel)
            policy.check_command(settings, sub, user)
        except PermissionDenied as exc:
            self.refuse(None, user, f"/failover {sub}", str(exc))
            raise

    def audit_command(self, sub: str, args: list[str], user: str, channel: str, text: str) -> None:
        """Every command is in the audit log: in the chain of the run it concerns, else in the "-" chain."""
        run_id = "-"
        if sub in ("status", "report") and args:
            try:
                run_id = self.service.get_run(args[0]).id
            except UsageError:
                run_id = "-"  # the command itself will say there is no such run
        else:
            active = self.service.active_run()
            run_id = active.id if active else "-"
        audit.record(
            self.store, run_id, user, "command", detail={"command": f"/failover {text}".strip(), "channel": channel}
        )

    def open_run(self, direction: str, args: list[str], user: str, channel: str) -> Opened:
        """Open a run and post its status card; without a thread there is no run (it is closed again)."""
        word = command_word(direction)
        if not args:
            raise UsageError(f"Which site? `/failover {word} <site>`; sites: {', '.join(sorted(self.config.sites))}")
        site, options = args[0], args[1:]
        try:
            run = self.service.open_run(direction, site, options, user, channel)
        except UserError as exc:
            self.refuse(None, user, f"/failover {direction} {site}", str(exc))
            raise
        audit.record(
            self.store,
            run.id,
            user,
            "command",
            detail={"command": f"/failover {word} " + " ".join(args), "channel": channel},
        )
        assert self.presenter is not None, "opening a run needs the presenter"
        try:
            thread = self.presenter.open_thread(run.id)  # the status card first
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            self.service.abort(
                run.id, user, f"Slack refused the status card in the channel ({error}); nothing was done"
            )
            if error in ("not_in_channel", "channel_not_found", "is_archived"):
                raise UsageError(
                    f"I cannot post in this channel ({error}), so {run.id} was closed before any step: nothing "
                    "was done. Invite me (`/invite @failover-bot`) and type the command again."
                ) from None
            raise UsageError(
                f"Slack refused the run's status card ({error}), so {run.id} was closed before any step: nothing "
                "was done. The bot's log has the details."
            ) from None
        opened = Opened(run.id, direction, site, self.permalink(channel, thread))
        self.changed(run.id)
        return opened

    def _pick_run(self, args: list[str]) -> Run:
        if args:
            return self.service.get_run(args[0])
        run = self.service.active_run() or self.service.last_run()
        if run is None:
            raise UsageError("There is no run yet. `/failover start <site>` opens one.")
        return run

    def status(self, args: list[str]) -> str:
        """The answer of `/failover status [<run-id>]`."""
        run = self._pick_run(args)
        view = self.service.view(run.id)
        link = self.permalink(run.channel, run.thread_ts)
        return status_text(view, utcnow(), link, self.presenter.left(view) if self.presenter else None)

    def plan(self, args: list[str], user: str, channel: str) -> tuple[list[str], Callable[[], str | None]]:
        """The replies of `/failover plan`, and what shares the full plan as a file (returns Slack's refusal)."""
        from bot.render.plan import format_plan
        from bot.runs.runbook import COMMAND_WORDS, direction_of, plan_for_command

        if len(args) < 2 or args[0] not in COMMAND_WORDS:
            raise UsageError("`/failover plan start|failback <site> [options]`")
        direction = direction_of(args[0])
        plan = plan_for_command(self.config, direction, args[1], args[2:], self.service.failovers_of)
        # One line per step, never cut off; the full detail is `failover-bot plan` (response_url takes 5 posts).
        replies = chunks(plan_summary(plan, self.config, " ".join(args)))
        if len(replies) > 5:
            raise UsageError(
                f"The plan has {len(plan.steps)} steps, too many to show here: `failover-bot plan {' '.join(args)}`."
            )

        def share() -> str | None:
            # The full plan (every value and instruction, as `failover-bot plan` prints it) as a file in the channel.
            assert self.client is not None, "sharing a plan needs Slack"
            try:
                self.client.files_upload_v2(
                    channel=channel,
                    content=format_plan(plan, self.config),
                    filename=f"plan-{args[0]}-{args[1]}.txt",
                    title=f"Plan: {direction} {args[1]}",
                    initial_comment=(
                        f"The full plan `/failover plan {escape_mrkdwn(' '.join(args))}`, asked for by <@{user}>"
                    ),
                )
            except SlackApiError as exc:
                return f"Slack refused the full plan as a file ({exc.response.get('error')}); the summary is above."
            return None

        return replies, share

    def check(self, args: list[str]) -> list[str]:
        """The replies of `/failover check <site>`: a read-only preflight on the engine's own connections."""
        from actions.preflight import format_checks

        if not args:
            raise UsageError("`/failover check <site>`")
        self.config.site(args[0])
        executor = self.read_executor or (self.worker.executor if self.worker is not None else None)
        results = preflight(self.config, args[0], executor=executor)
        verdict = "all checks passed" if all(r.ok for r in results) else "some checks FAILED"
        replies = [f"```{escape_mrkdwn(chunk)}```" for chunk in chunks(format_checks(results))[:4]]  # host output
        return [*replies, f"check {args[0]}: {verdict}"]

    def abort_active(self, user: str, reason: str) -> str:
        """Abort the active run (operators; the service checks); returns its id."""
        run = self.service.active_run()
        if run is None:
            raise UsageError("There is no active run to abort.")
        self.service.abort(run.id, user, reason)
        self.changed(run.id)
        return run.id

    def report(self, args: list[str]) -> list[str]:
        """`/failover report`: posted in the run's thread when it has one, else the replies themselves."""
        run = self._pick_run(args)
        if run.thread_ts and self.reports is not None:
            self.reports.post(run.id)  # summary, then the full report and its timeline as files, in the thread
            return [f"Posted the report of {run.id} in its thread."]
        from bot.report import build_report

        return [f"```{escape_mrkdwn(chunk)}```" for chunk in chunks(build_report(self.store, run.id).to_markdown())[:5]]

    def readiness_text(self, args: list[str]) -> list[str]:
        """`/failover readiness [now]`: the latest results (or a round run now) as replies."""
        from bot.readiness.messages import results_text

        if self.readiness is None:
            raise UsageError("Readiness is not available in this bot.")
        if args and args[0].lower() != "now" or len(args) > 1:
            raise UsageError("`/failover readiness [now]`")
        report = self.readiness.run_round() if args else self.readiness.latest()
        if args and report is None:
            return ["A readiness round is running right now; its results follow shortly (`/failover readiness`)."]
        return [f"```{escape_mrkdwn(chunk)}```" for chunk in chunks(results_text(report))[:5]]  # from the hosts

    def thread_of(self, run_id: str) -> tuple[str, str | None]:
        """The run's channel and thread."""
        run = self.service.get_run(run_id)
        return run.channel, run.thread_ts

    # ------------------------------------------------------------------ links and App Home

    def permalink(self, channel: str, ts: str | None) -> str | None:
        if not channel or not ts or self.client is None:
            return None
        key = f"{channel}:{ts}"
        if key not in self._permalinks:
            try:
                self._permalinks[key] = str(self.client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"])
            except SlackApiError:
                return None
        return self._permalinks[key]

    def home(self, user: str, now: datetime) -> dict[str, Any]:
        """That person's App Home: the sites, the active run (and whether it waits on them), recent runs."""
        from bot.engine.home import build_home

        return build_home(self, user, now)
