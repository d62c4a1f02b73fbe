"""What listeners share: the engine and the pools they queue work on, friendly error replies, the group directory."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.blocks.text import escape_mrkdwn
from bot.engine import RunEngine
from bot.errors import UserError

log = logging.getLogger(__name__)


class GroupDirectory:
    """Members of Slack user groups, looked up through Slack and cached for a while."""

    def __init__(self, client: WebClient, ttl_s: float) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(group)
            if hit and now - hit[0] < self.ttl_s:
                return hit[1]
        try:
            users: frozenset[str] = frozenset(self.client.usergroups_users_list(usergroup=group).get("users", []))
        except SlackApiError as exc:
            log.warning("cannot list members of user group %s: %s", group, exc.response.get("error"))
            users = frozenset()
        with self._lock:
            self._cache[group] = (now, users)
        return users


@dataclass
class BotContext:
    """The engine, and where listeners queue what they do after acknowledging."""

    engine: RunEngine
    client: WebClient
    # What listeners do after acknowledging runs here: a few threads, so that a burst of clicks queues
    # instead of starving the threads that acknowledge the next requests.
    work: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="slack-work"))
    # Read-only commands that reach hosts (/failover check) run apart: a few threads (and the engine's WinRM
    # connections of their own), so a slow or hanging host they probe never delays a click or holds a host's
    # connection that a step waits for. At most ``max_pending_reads`` wait or run; more are refused.
    reads: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="slack-read"))
    max_pending_reads: int = 8
    _pending_reads: int = 0
    _reads_lock: threading.Lock = field(default_factory=threading.Lock)

    def background(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # guarded() answers people; this only keeps a broken job from vanishing unseen
                log.exception("background work %s failed", getattr(fn, "__name__", fn))

        try:
            self.work.submit(run)
        except RuntimeError:  # shutting down: do it here rather than drop it
            run()

    def background_read(self, fn: Callable[..., None], *args: Any) -> bool:
        """Queue read-only work on the read pool; False (nothing queued) when ``max_pending_reads`` are pending."""
        with self._reads_lock:
            if self._pending_reads >= self.max_pending_reads:
                return False
            self._pending_reads += 1

        def run() -> None:
            try:
                fn(*args)
            except Exception:  # guarded() answers people; this only keeps a broken job from vanishing unseen
                log.exception("read-only work %s failed", getattr(fn, "__name__", fn))
            finally:
                with self._reads_lock:
                    self._pending_reads -= 1

        try:
            self.reads.submit(run)
        except RuntimeError:  # shutting down: reads are not worth finishing
            with self._reads_lock:
                self._pending_reads -= 1
            return False
        return True

    def first_delivery(self, body: dict[str, Any]) -> bool:
        """False for a Slack retry or a replayed click of a delivery already handled (it then does nothing)."""
        return self.engine.first_delivery(delivery_key(body))

    def close(self) -> None:
        self.reads.shutdown(wait=False, cancel_futures=True)  # read-only: not worth waiting for
        self.work.shutdown(wait=True)  # finish what people already clicked


@contextmanager
def guarded(respond: Respond, user: str, what: str) -> Iterator[None]:
    """Known errors become a friendly ephemeral answer; unknown ones get a correlation id in the log."""
    try:
        yield
    except UserError as exc:  # may quote what the person typed: inert, but the bot's own mentions still work
        respond(text=escape_mrkdwn(str(exc), keep_references=True), response_type="ephemeral", replace_original=False)
    except Exception as exc:  # the person still gets an answer; details go to the log only
        ref = uuid.uuid4().hex[:8]
        log.exception("error %s while handling %s for %s", ref, what, user)
        respond(
            text=f"Something went wrong on the bot's side (reference {ref}); nothing was changed by this "
            f"request. The operator can find {ref} in the bot's log. ({type(exc).__name__})",
            response_type="ephemeral",
            replace_original=False,
        )


def say(respond: Respond, text: str) -> None:
    """An ephemeral reply to the person who asked, below the message they acted on."""
    respond(text=text, response_type="ephemeral", replace_original=False)


def delivery_key(body: dict[str, Any]) -> str | None:
    """What identifies one delivery across Slack's retries and replays."""
    if body.get("type") == "block_actions":
        acts = body.get("actions") or [{}]
        user = (body.get("user") or {}).get("id", "")
        return f"click:{user}:{acts[0].get('action_ts', '')}:{acts[0].get('action_id', '')}"
    if body.get("command"):
        return f"command:{body.get('trigger_id', '')}"
    return None
