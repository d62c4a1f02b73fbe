"""Scripted Slack users who send the bot signed slash commands and button clicks exactly as Slack delivers them."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier

from sandbox.people.screen import Button, ButtonNotFound, FormIncomplete, buttons, input_value, menu_options
from sandbox.slack_api import BOT_ID, BOT_USER_ID, Ephemeral, FakeSlackApi, Message, OpenView, is_loopback

API_APP_ID = "A0FAILOVER"
DEFAULT_CHANNEL = "C0INCIDENT"
_counter = itertools.count(1)


@dataclass(frozen=True)
class Response:
    """The bot's HTTP answer to one delivery."""

    status: int
    body: str
    elapsed_s: float
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Delivery:
    """One request as Slack sent it (kept so that it can be delivered again as a Slack retry)."""

    body: str
    headers: dict[str, str]


class SlackPerson:
    """One Slack user: posts signed, form-encoded requests to the bot's ``POST /slack/events``."""

    def __init__(
        self,
        user_id: str,
        user_name: str,
        *,
        bot_url: str,
        signing_secret: str,
        team_id: str = "T0TEST",
        slack: FakeSlackApi | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        host = urlsplit(bot_url).hostname or ""
        if not is_loopback(host):
            raise ValueError(f"SlackPerson talks to loopback only, not {bot_url!r}")
        base = bot_url.rstrip("/")
        self.events_url = base if base.endswith("/slack/events") else f"{base}/slack/events"
        self.user_id = user_id
        self.user_name = user_name
        self.team_id = team_id
        self.slack = slack
        self.timeout_s = timeout_s
        self._verifier = SignatureVerifier(signing_secret)
        self.last_delivery: Delivery | None = None
        self.last_trigger_id: str | None = None  # of the last click or command: the modal it opened, if any
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ---- what a person does ----------------------------------------------------------------------

    def command(
        self,
        text: str,
        channel: str = DEFAULT_CHANNEL,
        *,
        command: str = "/failover",
        retry_num: int | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> Response:
        """Type ``{command} {text}`` in ``channel``."""
        fields = {
            "token": "sandbox-verification-token",
            "team_id": self.team_id,
            "team_domain": "sandbox",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": self.user_id,
            "user_name": self.user_name,
            "command": command,
            "text": text,
            "api_app_id": API_APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._response_url(channel=channel),
            "trigger_id": self._trigger_id(),
        }
        return self.send(urlencode(fields), retry_num=retry_num, timestamp=timestamp, bad_signature=bad_signature)

    def click(
        self,
        message: Message | Ephemeral,
        action_id: str,
        value: str | None = None,
        *,
        channel: str | None = None,
        retry_num: int | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
        inputs: dict[tuple[str, str], str] | None = None,
    ) -> Response:
        """Click the button ``action_id`` (with ``value`` if given) on ``message``; a confirm dialog is accepted.

        ``inputs`` fills the message's text inputs first: ``{(block_id, action_id): text}``.
        """
        present = buttons(message.blocks)
        matches = [b for b in present if b.action_id == action_id and (value is None or b.value == value)]
        if not matches:
            wanted = action_id if value is None else f"{action_id} with value {value!r}"
            listing = ", ".join(b.describe() for b in present) or "none"
            ts = message.ts if isinstance(message, Message) else message.message_ts
            raise ButtonNotFound(f"no button {wanted} in message {ts}; buttons present: {listing}")
        payload = self.block_actions_payload(message, matches[0], channel=channel)
        for (block_id, input_id), text in (inputs or {}).items():
            values = payload["state"]["values"].setdefault(block_id, {})
            values[input_id] = {"type": "plain_text_input", "value": text}
        return self.click_raw(payload, retry_num=retry_num, timestamp=timestamp, bad_signature=bad_signature)

    def choose(
        self,
        message: Message,
        action_id: str,
        option: str,
        *,
        retry_num: int | None = None,
    ) -> Response:
        """Open the overflow menu ``action_id`` on ``message`` and pick the option whose text or value is ``option``."""
        present = menu_options(message.blocks)
        matches = [
            o
            for o in present
            if o.action_id.split(":", 1)[0] == action_id.split(":", 1)[0] and option in (o.text, o.value)
        ]
        if not matches:
            listing = ", ".join(f"{o.action_id} ({o.text!r})" for o in present) or "none"
            raise ButtonNotFound(
                f"no menu option {option!r} of {action_id} in message {message.ts}; present: {listing}"
            )
        chosen = matches[0]
        pseudo = Button(chosen.block_id, chosen.action_id, "", None, None)
        payload = self.block_actions_payload(message, pseudo)
        payload["actions"] = [
            {
                "type": "overflow",
                "action_id": chosen.action_id,
                "block_id": chosen.block_id,
                "selected_option": {"text": {"type": "plain_text", "text": chosen.text}, "value": chosen.value},
                "action_ts": f"{time.time():.6f}",
            }
        ]
        return self.click_raw(payload, retry_num=retry_num)

    def submit_view(self, opened: OpenView, values: dict[str, Any] | None = None) -> Response:
        """Fill the modal's inputs (``{block_id: value}``: text, a list of checkbox values, a radio value) and submit.

        A required input left empty raises FormIncomplete, as Slack keeps such a modal open itself. When the
        bot answers without ``response_action: errors`` the modal closes in the Slack stand-in.
        """
        values = values or {}
        state: dict[str, dict[str, Any]] = {}
        for block in opened.view.get("blocks", []):
            if block.get("type") != "input":
                continue
            block_id = str(block.get("block_id", ""))
            element = block.get("element", {})
            given = values.get(block_id)
            if (given is None or given == "" or given == []) and not block.get("optional"):
                raise FormIncomplete(f"the modal's required input {block_id!r} is empty")
            state[block_id] = {str(element.get("action_id", "")): input_value(element, given)}
        view = {
            **opened.view,
            "id": opened.id,
            "hash": opened.hash,
            "team_id": self.team_id,
            "state": {"values": state},
        }
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "sandbox"},
            "user": {"id": self.user_id, "username": self.user_name, "name": self.user_name, "team_id": self.team_id},
            "api_app_id": API_APP_ID,
            "token": "sandbox-verification-token",
            "trigger_id": self._trigger_id(),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
        }
        resp = self.click_raw(payload)
        answer: dict[str, Any] = {}
        if resp.body.strip():
            try:
                answer = dict(resp.json())
            except ValueError:
                answer = {}
        if resp.status == 200 and answer.get("response_action") != "errors" and self.slack is not None:
            self.slack.close_view(opened.id)
        return resp

    def click_raw(
        self,
        payload: dict[str, Any],
        *,
        retry_num: int | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> Response:
        """Deliver a crafted interactivity ``payload`` (a dict serialised into ``payload=``)."""
        body = urlencode({"payload": json.dumps(payload)})
        return self.send(body, retry_num=retry_num, timestamp=timestamp, bad_signature=bad_signature)

    def block_actions_payload(
        self, message: Message | Ephemeral, button: Button, *, channel: str | None = None
    ) -> dict[str, Any]:
        """The block_actions payload Slack sends when this person clicks ``button`` on ``message``."""
        ephemeral = isinstance(message, Ephemeral)
        channel_id = channel or message.channel or DEFAULT_CHANNEL
        message_ts = message.message_ts if isinstance(message, Ephemeral) else message.ts
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": ephemeral,
        }
        if message.thread_ts and message.thread_ts != message_ts:
            container["thread_ts"] = message.thread_ts
        action: dict[str, Any] = {
            "action_id": button.action_id,
            "block_id": button.block_id,
            "text": {"type": "plain_text", "text": button.text, "emoji": True},
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        if button.value is not None:
            action["value"] = button.value
        if button.style is not None:
            action["style"] = button.style
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": self.user_id, "username": self.user_name, "name": self.user_name, "team_id": self.team_id},
            "api_app_id": API_APP_ID,
            "token": "sandbox-verification-token",
            "container": container,
            "trigger_id": self._trigger_id(),
            "team": {"id": self.team_id, "domain": "sandbox"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": channel_id.lower()},
            "state": {"values": {}},
            "response_url": self._response_url(
                channel=channel_id,
                message_ts=None if ephemeral else message_ts,
                thread_ts=message.thread_ts,
                ephemeral_ts=message_ts if ephemeral else None,
            ),
            "actions": [action],
        }
        if isinstance(message, Message):
            # Slack omits the message of an ephemeral container.
            payload["message"] = {
                "type": "message",
                "user": message.user or BOT_USER_ID,
                "bot_id": BOT_ID,
                "ts": message.ts,
                "text": message.text,
                "blocks": message.blocks,
                **({"thread_ts": message.thread_ts} if message.thread_ts else {}),
            }
        return payload

    # ---- the wire --------------------------------------------------------------------------------

    def send(
        self,
        body: str,
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        bad_signature: bool = False,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> Response:
        """Sign and POST a raw ``body`` (form-encoded; events are JSON) to the bot, as Slack does."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._verifier.generate_signature(timestamp=ts, body=body) or ""
        if bad_signature:
            signature = "v0=" + ("0" * 64 if signature[3:] != "0" * 64 else "1" * 64)
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        self.last_delivery = Delivery(body, headers)
        return self._post(body, headers)

    def open_home(self) -> Response:
        """Open the app's Home tab: Slack sends a signed ``app_home_opened`` event (JSON) to the bot."""
        event = {
            "token": "sandbox-verification-token",
            "team_id": self.team_id,
            "api_app_id": API_APP_ID,
            "type": "event_callback",
            "event_id": f"Ev{next(_counter):08d}",
            "event_time": int(time.time()),
            "event": {
                "type": "app_home_opened",
                "user": self.user_id,
                "channel": f"D0{self.user_id[2:]}",
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
        }
        return self.send(json.dumps(event), content_type="application/json")

    def redeliver(self, retry_num: int = 1, retry_reason: str = "http_timeout") -> Response:
        """Deliver the last request again, byte for byte, as a Slack retry (freshly signed, with retry headers)."""
        if self.last_delivery is None:
            raise RuntimeError(f"{self.user_name} has sent nothing to redeliver")
        return self.send(self.last_delivery.body, retry_num=retry_num, retry_reason=retry_reason)

    def _post(self, body: str, headers: dict[str, str]) -> Response:
        return self._post_to(self.events_url, body, headers)

    def _post_to(self, url: str, body: str, headers: dict[str, str]) -> Response:
        """POST one delivery to ``url``; HTTP errors are answers too (a 401 is what a test wants to see)."""
        request = urllib.request.Request(url, data=body.encode("utf-8"), headers=headers, method="POST")
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=self.timeout_s) as reply:
                content = reply.read().decode("utf-8")
                return Response(reply.status, content, time.monotonic() - started, dict(reply.headers.items()))
        except urllib.error.HTTPError as exc:
            content = exc.read().decode("utf-8", errors="replace")
            return Response(exc.code, content, time.monotonic() - started, dict(exc.headers.items()))

    def _response_url(self, **target: Any) -> str:
        if self.slack is None:
            # Nothing listens on the discard port: a bot that responds will see the failure.
            return f"http://127.0.0.1:9/response_url/{self.user_id}"
        return self.slack.response_url(self.user_id, **target)

    def _trigger_id(self) -> str:
        if self.slack is not None:
            trigger = self.slack.issue_trigger(self.user_id)  # the stand-in expires it as Slack does
        else:
            trigger = f"{next(_counter)}.{int(time.time())}.sandbox{self.user_id.lower()}"
        self.last_trigger_id = trigger
        return trigger
