"""The App Home tab: on ``app_home_opened``, publish that person's view (built by the engine)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError

from bot.engine.home import waiting_on_you
from bot.listeners.common import BotContext

__all__ = ["on_home_opened", "publish_home", "register", "waiting_on_you"]

log = logging.getLogger(__name__)


def register(app: App, ctx: BotContext) -> None:
    """Bind the App Home listener to ``app``."""

    @app.event("app_home_opened")
    def _opened(event: dict[str, Any]) -> None:
        on_home_opened(ctx, event)


def on_home_opened(ctx: BotContext, event: dict[str, Any]) -> None:
    if event.get("tab", "home") != "home" or not event.get("user"):
        return  # the Messages tab, or no one to publish for
    ctx.background(publish_home, ctx, str(event["user"]))


def publish_home(ctx: BotContext, user: str) -> None:
    try:
        ctx.client.views_publish(user_id=user, view=ctx.engine.home(user, datetime.now(UTC)))
    except SlackApiError as exc:
        log.warning("Slack refused the home tab for %s: %s", user, exc.response.get("error"))
