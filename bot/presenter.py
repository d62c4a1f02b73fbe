"""Keeps the incident thread in step with the run: status card, one step card at a time, broadcasts."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.blocks.kit import escape
from bot.blocks.status import status_card
from bot.blocks.step import step_card
from bot.blocks.text import escape_mrkdwn
from bot.blocks.who import direction_title, step_mentions
from bot.runs.estimate import Estimator
from bot.runs.machine import StepState
from bot.runs.rules import waits_on_people as waits_on_approvers
from bot.runs.runbook import completion_note
from bot.runs.service import RunService, RunView
from bot.store.db import utcnow

log = logging.getLogger(__name__)


class ChannelPacer:
    """Spaces chat.postMessage calls per channel (Slack allows about one a second)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, channel: str) -> None:
        if self.interval_s <= 0:
            return
        with self._lock:
            now = time.monotonic()
            ready = self._last.get(channel, 0.0) + self.interval_s
            self._last[channel] = max(now, ready)
        if ready > now:
            time.sleep(ready - now)


class Presenter:
    """Renders run state into Slack. Idempotent: ``sync`` any number of times, only changes are sent."""

    def __init__(
        self,
        service: RunService,
        client: WebClient,
        *,
        post_interval_s: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        refresh_s: float = 60.0,
    ) -> None:
        self.service = service
        self.client = client
        self.clock = clock
        self.refresh_s = refresh_s  # the status card of an active run is re-rendered about this often
        self._refreshed: dict[str, datetime] = {}  # run -> the time its status card last showed ("as of")
        self._due: set[str] = set()  # runs whose status card is due a fresh time (the paced refresh)
        self._refused: dict[str, dict[str, str]] = {}  # run -> step -> Slack's error for its refused message
        self._links: dict[str, str] = {}  # message ts -> permalink
        self.pacer = ChannelPacer(post_interval_s)
        self.estimator = Estimator(service.store)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._rendered: dict[str, str] = {}  # message ts -> digest of the blocks last sent
        self._announced: set[str] = set()
        self._dirty: set[str] = set()

    def _lock(self, run_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(run_id, threading.Lock())

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        broadcast: bool = False,
    ) -> str:
        self.pacer.wait(channel)
        resp = self.client.chat_postMessage(
            channel=channel, text=text, blocks=blocks, thread_ts=thread_ts, reply_broadcast=broadcast or None
        )
        return str(resp["ts"])

    def _update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        digest = card_digest(blocks)
        if self._rendered.get(ts) == digest:
            return  # coalesced: nothing changed since the last update
        self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        self._rendered[ts] = digest

    def sync(self, run_id: str, what: str = "") -> None:
        """Bring the thread up to date with the stored run state.

        Coalesced: while one thread is syncing a run, further requests only mark it dirty and return;
        the syncing thread looks once more, so a burst of changes costs a few passes, not one each.
        """
        lock = self._lock(run_id)
        with self._guard:
            self._dirty.add(run_id)
        while True:
            if not lock.acquire(blocking=False):
                return  # the holder will see the dirty mark
            try:
                while self._take_dirty(run_id):
                    try:
                        self._sync(run_id)
                    except SlackApiError as exc:
                        log.warning("Slack refused an update of run %s: %s", run_id, exc.response.get("error"))
            finally:
                lock.release()
            with self._guard:
                if run_id not in self._dirty:
                    return  # nobody asked between our last pass and the release

    def _take_dirty(self, run_id: str) -> bool:
        with self._guard:
            if run_id in self._dirty:
                self._dirty.discard(run_id)
                return True
            return False

    def left(self, view: RunView) -> str | None:
        """How long is left of an active run, for the status card, `/failover status` and App Home."""
        left = self.estimator.left(view)
        return left.text() if left is not None else None

    def _status_card(self, view: RunView, now: datetime) -> list[dict[str, Any]]:
        self._refreshed[view.run.id] = now
        return self._status_blocks(view, now, self.left(view))

    def _status_blocks(self, view: RunView, now: datetime, left: str | None) -> list[dict[str, Any]]:
        refused = self._refused.get(view.run.id, {})
        problems = [
            f"Slack refused the message of step {step} (`{escape(error)}`): its buttons are not shown. "
            "The bot's log has the details."
            for step, error in refused.items()
        ]
        return status_card(
            view,
            now,
            left,
            settings=self.service.config.slack,
            links=self._step_links(view),
            problems=problems,
        )

    def _step_links(self, view: RunView) -> dict[str, str]:
        cur = view.current
        ts = cur.row.message_ts if cur is not None else None
        if cur is None or not ts or ts.startswith("posting") or not view.run.channel:
            return {}
        if ts not in self._links:
            try:
                self._links[ts] = str(
                    self.client.chat_getPermalink(channel=view.run.channel, message_ts=ts)["permalink"]
                )
            except SlackApiError as exc:
                log.info("no permalink for %s: %s", ts, exc.response.get("error"))
                return {}
        return {cur.step.id: self._links[ts]}

    def open_thread(self, run_id: str) -> str:
        """Post the run's status card (the thread's root) if it is not there yet; Slack's refusal is raised."""
        with self._lock(run_id):
            view = self.service.view(run_id)
            run = view.run
            if run.thread_ts is not None:
                return run.thread_ts
            blocks = self._status_card(view, self.clock())
            ts = self.post(run.channel, direction_title(view), blocks)
            self.service.set_thread(run_id, run.channel, ts)
            self._rendered[ts] = card_digest(blocks)
            return ts

    def refresh(self) -> bool:
        """Re-render the active run's status card if it is older than ``refresh_s`` (paced: one update per run).

        Called about every few seconds; the card's elapsed and waiting times stay true. True if it was due.
        """
        run = self.service.active_run()
        if run is None or not run.thread_ts:
            return False
        last = self._refreshed.get(run.id)
        if last is not None and (self.clock() - last).total_seconds() < self.refresh_s:
            return False
        with self._guard:
            self._due.add(run.id)
        self.sync(run.id, "refresh")
        return True

    def _sync(self, run_id: str) -> None:
        view = self.service.view(run_id)
        run = view.run
        if not run.channel:
            return
        now = self.clock()
        title = direction_title(view)
        if run.thread_ts is None:
            blocks = self._status_card(view, now)
            ts = self.post(run.channel, title, blocks)
            self.service.set_thread(run_id, run.channel, ts)
            view = self.service.view(run_id)
            self._rendered[ts] = card_digest(blocks)
        thread = view.run.thread_ts
        assert thread is not None
        settings = self.service.config.slack
        for sv in view.steps:
            if sv.row.posted_at is None:
                continue  # never reached, or not needed
            blocks = step_card(view, sv, settings=settings)
            text = escape_mrkdwn(f"{sv.step.id} {sv.step.title}: {sv.state.replace('_', ' ')}")
            if sv.row.message_ts is None:
                if not self.service.claim_message(run_id, sv.step.id):
                    continue  # another process posts it
                # The first post pings the people the step waits on (edits notify nobody; a thread reply alone
                # notifies only those who follow the thread).
                pings = step_mentions(settings, view, sv) if waits_on_approvers(sv) else []
                try:
                    ts = self.post(run.channel, " ".join([text, *pings]), blocks, thread_ts=thread)
                except SlackApiError as exc:
                    self._refused_post(view, sv, str(exc.response.get("error")))
                    continue
                self._refused.get(run_id, {}).pop(sv.step.id, None)
                self.service.set_message_ts(run_id, sv.step.id, ts)
                self._rendered[ts] = card_digest(blocks)
            elif not sv.row.message_ts.startswith("posting"):
                self._update(run.channel, sv.row.message_ts, text, blocks)
            self._announce(view, sv)
        self._update_status_card(run_id, thread, title, now)
        self._announce_run(view)

    def _update_status_card(self, run_id: str, thread: str, title: str, now: datetime) -> None:
        """Update the status card only when more than its clock changed; the paced refresh (``refresh``) moves
        its times on. Rendered first at the time it last showed: equal to what Slack shows, nothing is sent."""
        view = self.service.view(run_id)  # again: the loop above may have posted the current step's message
        left = self.left(view)
        with self._guard:
            due = run_id in self._due
            self._due.discard(run_id)
        shown = self._refreshed.get(run_id)
        if (
            not due
            and shown is not None
            and self._rendered.get(thread) == card_digest(self._status_blocks(view, shown, left))
        ):
            return  # only the clock moved since the card was last sent
        self._refreshed[run_id] = now
        self._update(view.run.channel, thread, title, self._status_blocks(view, now, left))

    def _refused_post(self, view: RunView, sv: Any, error: str) -> None:
        """Slack refused a step's message: say so in the thread in plain words and on the status card."""
        log.error("Slack refused the message of %s %s: %s", view.run.id, sv.step.id, error)
        self.service.release_message_claim(view.run.id, sv.step.id)
        refused = self._refused.setdefault(view.run.id, {})
        if refused.get(sv.step.id) == error:
            return  # said already
        refused[sv.step.id] = error
        self.post(
            view.run.channel,
            f"⚠️ Slack refused the message of step {sv.step.id} ({sv.step.title}): {error}. The step waits, but "
            f"its buttons cannot be shown. `/failover status` shows where {view.run.id} stands; an operator can "
            "`/failover abort` it. The bot's log has the details.",
            thread_ts=view.run.thread_ts,
            broadcast=True,
        )

    def _announce(self, view: RunView, sv: Any) -> None:
        if sv.state != StepState.FAILED:
            return
        key = f"{view.run.id}:{sv.step.id}:{sv.row.attempt}:{sv.row.finished_at}:failed"
        if key in self._announced:
            return
        self._announced.add(key)
        self.post(
            view.run.channel,
            escape_mrkdwn(f"❌ {view.run.id} step {sv.step.id} ({sv.step.title}) failed: {(sv.row.error or '')[:500]}"),
            thread_ts=view.run.thread_ts,
            broadcast=True,
        )

    def _announce_run(self, view: RunView) -> None:
        run = view.run
        if run.state == "active":
            return
        key = f"{run.id}:{run.state}"
        if key in self._announced:
            return
        self._announced.add(key)
        if run.state == "completed":
            text = (
                f"✅ {direction_title(view)} completed: all {len(view.steps)} steps done. `/failover report {run.id}`"
            )
            note = completion_note(self.service.config, view.plan)
            if note:
                text += f"\n⚠️ {note}"
        else:
            reason = run.abort_reason or "no reason given"
            text = f"🛑 {escape_mrkdwn(direction_title(view))} aborted: {escape_mrkdwn(reason)}"
        ended = self.service.end_digest(run.id)
        if ended:  # a copy of the audit chain's head outside the database; the report shows the same
            text += f"\nAudit chain when the run ended: {ended}"
        self.post(run.channel, text, thread_ts=run.thread_ts, broadcast=True)

    def say_in_thread(self, run_id: str, text: str, *, broadcast: bool = False) -> None:
        run = self.service.get_run(run_id)
        if run.channel and run.thread_ts:
            self.post(run.channel, text, thread_ts=run.thread_ts, broadcast=broadcast)


def card_digest(blocks: list[dict[str, Any]]) -> str:
    """A cheap fingerprint of a card's rendered blocks: equal digests, nothing to send."""
    return hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()


class StatusRefresher:
    """Keeps the active run's status card true: asks the presenter every ``tick_s`` (it paces itself)."""

    def __init__(self, presenter: Presenter, tick_s: float = 5.0, *, leads: Callable[[], bool] = lambda: True) -> None:
        self.presenter = presenter
        self.tick_s = tick_s
        self.leads = leads  # with replicas, only the one that sends reminders refreshes the card
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StatusRefresher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="status-refresh", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            if not self.leads():
                continue
            try:
                self.presenter.refresh()
            except Exception:  # a database or Slack hiccup must not end the refreshing for good
                log.exception("refreshing the status card failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
