"""The report in Slack: a summary in the run's thread, the full report and its timeline picture attached.

Posted once when a run ends (completed or aborted), and again whenever someone asks with ``/failover report``.
People are named through ``users.info`` (cached); the picture is drawn in a short-lived child process.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from bot.render.summary import summary_blocks
from bot.render.timeline import TimelineError, render_png
from bot.report import Report, build_report
from bot.runs.service import RunService
from bot.store import audit
from bot.store.models import AuditEvent, Run

log = logging.getLogger(__name__)

POSTED_EVENT = "report.posted"


class PeopleNames:
    """Slack user IDs to display names, through ``users.info``, cached; the ID when Slack cannot tell."""

    def __init__(self, client: WebClient, ttl_s: float = 3600.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, user: str) -> str:
        if not user or user in ("bot", "-") or not user.startswith(("U", "W")):
            return user
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(user)
            if hit and now - hit[0] < self.ttl_s:
                return hit[1]
        try:
            info = self.client.users_info(user=user).get("user") or {}
            profile = info.get("profile") or {}
            name = str(profile.get("display_name") or info.get("real_name") or info.get("name") or user)
        except SlackApiError as exc:
            log.info("users.info does not name %s: %s", user, exc.response.get("error"))
            name = user
        with self._lock:
            self._cache[user] = (now, name)
        return name


class ReportPoster:
    """Posts a run's report into its thread: at the end of the run (once) and on request."""

    def __init__(self, service: RunService, client: WebClient, names: PeopleNames | None = None) -> None:
        self.service = service
        self.client = client
        self.names = names or PeopleNames(client)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="report")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def after_change(self, run_id: str) -> None:
        """Called after every change of a run: when it has just ended, post its report (in the background)."""
        try:
            run = self.service.get_run(run_id)
        except Exception:  # noqa: BLE001 - a report is never worth breaking the caller
            log.exception("cannot read run %s for its report", run_id)
            return
        if run.state == "active" or not run.thread_ts:
            return
        try:
            self._pool.submit(self._at_end, run_id)
        except RuntimeError:  # shutting down: the next start-up does not re-post; /failover report does
            log.info("not posting the report of %s: shutting down", run_id)

    def _at_end(self, run_id: str) -> None:
        if not self._claim(run_id):
            return
        try:
            self.post(run_id)
        except (SlackApiError, SlackRequestError, TimelineError, OSError) as exc:
            log.warning("the report of %s could not be posted: %s", run_id, exc)

    def _claim(self, run_id: str) -> bool:
        """True for the one process (of all replicas) that posts the end-of-run report; recorded in the audit log."""
        store = self.service.store
        with store.session() as s:
            # the run row's lock orders concurrent claims (SQLite: BEGIN IMMEDIATE already does)
            s.execute(sa.select(Run.id).where(Run.id == run_id).with_for_update())
            done = s.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.run_id == run_id, AuditEvent.event == POSTED_EVENT)
            )
            if done:
                return False
            audit.append(s, run_id, "bot", POSTED_EVENT, detail={"when": "run ended"})
        return True

    def post(self, run_id: str) -> Report:
        """Post the summary in the run's thread, then attach the full report (Markdown) and the timeline (PNG)."""
        run = self.service.get_run(run_id)
        report = build_report(self.service.store, run_id)
        if not run.channel or not run.thread_ts:
            raise ValueError(f"{run_id} has no thread to post its report in")
        text, blocks = summary_blocks(report, self.names)
        self.client.chat_postMessage(channel=run.channel, thread_ts=run.thread_ts, text=text, blocks=blocks)
        uploads: list[dict[str, Any]] = [
            {
                "content": report.to_markdown(self.names),
                "filename": f"{run_id}-report.md",
                "title": f"Report of {run_id}",
                "snippet_type": "markdown",
            }
        ]
        try:
            uploads.append(
                {
                    "file": render_png(report.timeline()),
                    "filename": f"{run_id}-timeline.png",
                    "title": f"Timeline of {run_id}",
                    "alt_txt": f"Timeline of {run_id}: each step's time waiting for approval, people working "
                    "and the bot executing",
                }
            )
        except (TimelineError, OSError) as exc:  # the report goes out without its picture, and says so
            log.warning("no timeline picture for %s: %s", run_id, exc)
        self.client.files_upload_v2(
            channel=run.channel,
            thread_ts=run.thread_ts,
            file_uploads=uploads,
            initial_comment=f"Full report of {run_id}" + (" and its timeline" if len(uploads) > 1 else ""),
        )
        return report
