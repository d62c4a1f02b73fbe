"""Builds the bolt App (its listeners, its request checks) and the Slack Web API client; never at import time."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.errors import ConfigError, ExecutionError
from bot.listeners import buttons, commands, home, views
from bot.listeners.common import BotContext

log = logging.getLogger(__name__)


def web_client(token: str, base_url: str | None = None) -> WebClient:
    """A Web API client that honours Retry-After on HTTP 429."""
    kwargs: dict[str, Any] = {"token": token, "retry_handlers": [RateLimitErrorRetryHandler(max_retry_count=3)]}
    if base_url:
        kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
    return WebClient(**kwargs)


def build_app(ctx: BotContext, *, token: str, signing_secret: str, socket_mode: bool = False) -> App:
    """The bolt App. Over HTTP every request must carry a valid signature (no secret: ConfigError);
    in Socket Mode deliveries arrive over the app-token's websocket and carry none. The bot token is
    checked with Slack (auth.test) before the bot serves anything.
    """
    if not signing_secret and not socket_mode:
        raise ConfigError(
            ctx.engine.config.path, "environment", "SLACK_SIGNING_SECRET is not set (needed to serve HTTP)"
        )
    if not token:
        raise ConfigError(ctx.engine.config.path, "environment", "SLACK_BOT_TOKEN is not set")
    # Listeners only acknowledge and queue their work (BotContext.background), so they may run on the
    # request thread itself: the response leaves as soon as the listener returns, without the polling
    # wait bolt's default mode spends on every request (about 10 ms each).
    try:
        app = App(
            signing_secret=signing_secret or None,
            client=ctx.client,
            request_verification_enabled=not socket_mode,
            process_before_response=True,
        )
    except BoltError as exc:  # auth.test refused the token
        raise ConfigError(
            ctx.engine.config.path, "environment", f"Slack did not accept SLACK_BOT_TOKEN: {exc}"
        ) from None
    except OSError as exc:  # Slack's API did not answer auth.test
        raise ExecutionError(f"cannot reach Slack's API to check SLACK_BOT_TOKEN: {exc}") from None

    commands.register(app, ctx)
    buttons.register(app, ctx)
    home.register(app, ctx)
    views.register(app, ctx)

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("unhandled error for a %s request: %s", body.get("type") or body.get("command"), error)

    return app
