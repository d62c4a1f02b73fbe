"""Messages and threads in the Slack stand-in: chat.*, conversations.* and the response_url of a click."""

from __future__ import annotations

import copy
import time
from typing import Any

from sandbox.slack_api.blockkit import block_problems
from sandbox.slack_api.limits import MAX_MESSAGE_TEXT, RESPONSE_URL_MAX_POSTS
from sandbox.slack_api.model import BOT_ID, Ephemeral, Message, ResponseUrl, SlackApiError, parse_blocks, truthy
from sandbox.slack_api.state import SlackState


class MessagesApi(SlackState):
    """chat.postMessage, chat.update, chat.postEphemeral, chat.getPermalink, conversations.* and response_url posts."""

    # ---- what a test reads -----------------------------------------------------------------------

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            try:
                return copy.deepcopy(self._messages[(channel, ts)])
            except KeyError:
                raise KeyError(f"no message {ts} in {channel}") from None

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The parent, then its replies in order, each with its current text and blocks."""
        with self._lock:
            parent = self._messages.get((channel, thread_ts))
            if parent is None:
                raise KeyError(f"no message {thread_ts} in {channel}")
            replies = [
                m
                for (c, _), m in self._messages.items()
                if c == channel and m.thread_ts == thread_ts and m.ts != thread_ts and not m.deleted
            ]
            replies.sort(key=lambda m: float(m.ts))
            return copy.deepcopy([parent, *replies])

    def channel_messages(self, channel: str) -> list[Message]:
        """Top-level messages and broadcast replies, in order, as the channel shows them."""
        with self._lock:
            found = [
                m
                for (c, _), m in self._messages.items()
                if c == channel and not m.deleted and (not m.is_reply or m.reply_broadcast)
            ]
            found.sort(key=lambda m: float(m.ts))
            return copy.deepcopy(found)

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        with self._lock:
            return copy.deepcopy([e for e in self._ephemerals if (user is None or e.user == user) and not e.deleted])

    # ---- response_url ----------------------------------------------------------------------------

    def response_url(
        self,
        for_id: str,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
        ephemeral_ts: str | None = None,
    ) -> str:
        """A fresh response_url whose posts reach user ``for_id`` (and replace ``message_ts`` on replace_original)."""
        if self._server is None:
            raise RuntimeError("FakeSlackApi is not started")
        with self._lock:
            key = f"{for_id}-{len(self._response_urls) + 1}"
            self._response_urls[key] = ResponseUrl(for_id, channel, message_ts, thread_ts, ephemeral_ts)
        return f"{self.url}/response_url/{key}"

    def handle_response_url(self, key: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            target = self._response_urls.get(key)
            try:
                if target is None:
                    raise SlackApiError("invalid_url", 404)
                if target.posts >= RESPONSE_URL_MAX_POSTS:
                    raise SlackApiError("used_url", 404)
                target.posts += 1
                self._respond(target, params)
            except SlackApiError as exc:
                self._record("response_url", params, exc.status, exc.error)
                return exc.status, {"ok": False, "error": exc.error}
            self._record("response_url", params, 200, None)
            return 200, {"ok": True}

    def _respond(self, target: ResponseUrl, params: dict[str, Any]) -> None:
        if truthy(params.get("delete_original")):
            original = self._original(target)
            if original is not None:
                original.deleted = True
            return
        text, blocks = self._content(params)
        if truthy(params.get("replace_original")):
            original = self._original(target)
            if original is None:
                raise SlackApiError("message_not_found", 404)
            self._replace(original, text, blocks)
            return
        if params.get("response_type") == "in_channel" and target.channel:
            thread_ts = target.thread_ts if params.get("thread_ts") is None else str(params["thread_ts"])
            ts = self._next_ts()
            self._messages[(target.channel, ts)] = Message(
                target.channel, ts, text, blocks, self.bot_user_id, thread_ts, posted_at=time.time()
            )
            return
        self._ephemerals.append(
            Ephemeral(
                target.user,
                target.channel,
                text,
                blocks,
                self._next_ts(),
                target.thread_ts,
                "response_url",
                time.time(),
            )
        )

    def _original(self, target: ResponseUrl) -> Message | Ephemeral | None:
        if target.ephemeral_ts is not None:
            return next((e for e in self._ephemerals if e.message_ts == target.ephemeral_ts), None)
        if target.channel and target.message_ts:
            return self._messages.get((target.channel, target.message_ts))
        return None

    # ---- chat.* ----------------------------------------------------------------------------------

    def _content(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text = str(params.get("text") or "")
        blocks = parse_blocks(params.get("blocks"))
        if not text and not blocks:
            raise SlackApiError("no_text")
        if len(text) > MAX_MESSAGE_TEXT:
            raise SlackApiError("msg_too_long")
        if block_problems(blocks):
            raise SlackApiError("invalid_blocks")
        return text, blocks

    def _thread_root(self, channel: str, thread_ts: Any) -> str | None:
        if not thread_ts:
            return None
        target = self._messages.get((channel, str(thread_ts)))
        if target is None or target.deleted:
            raise SlackApiError("thread_not_found")
        # Replying to a reply lands in the reply's thread, as in Slack.
        return target.thread_ts or target.ts

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        if channel in self.not_member:
            raise SlackApiError("not_in_channel")
        text, blocks = self._content(params)
        thread_ts = self._thread_root(channel, params.get("thread_ts"))
        ts = self._next_ts()
        message = Message(
            channel=channel,
            ts=ts,
            text=text,
            blocks=blocks,
            user=self.bot_user_id,
            thread_ts=thread_ts,
            reply_broadcast=bool(thread_ts) and truthy(params.get("reply_broadcast")),
            posted_at=time.time(),
        )
        self._messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": self._as_api_message(message)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        message = self._messages.get((channel, str(params.get("ts") or "")))
        if message is None or message.deleted:
            raise SlackApiError("message_not_found")
        text = str(params["text"]) if params.get("text") is not None else message.text
        blocks = parse_blocks(params["blocks"]) if "blocks" in params else message.blocks
        if not text and not blocks:
            raise SlackApiError("no_text")
        if block_problems(blocks):
            raise SlackApiError("invalid_blocks")
        self._replace(message, text, blocks)
        return {"channel": channel, "ts": message.ts, "text": text, "message": self._as_api_message(message)}

    @staticmethod
    def _replace(message: Message | Ephemeral, text: str, blocks: list[dict[str, Any]]) -> None:
        message.history.append((message.text, message.blocks))
        message.text, message.blocks = text, copy.deepcopy(blocks)
        if isinstance(message, Message):
            message.updated_at = time.time()

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        user = params.get("user")
        if not user:
            raise SlackApiError("user_not_found")
        text, blocks = self._content(params)
        ts = self._next_ts()
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        self._ephemerals.append(Ephemeral(str(user), channel, text, blocks, ts, thread_ts, posted_at=time.time()))
        return {"message_ts": ts}

    def _get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        message = self._messages.get((channel, str(params.get("message_ts") or "")))
        if message is None:
            raise SlackApiError("message_not_found")
        link = f"https://sandbox.slack.test/archives/{channel}/p{message.ts.replace('.', '')}"
        if message.is_reply:
            link += f"?thread_ts={message.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    # ---- conversations.* -------------------------------------------------------------------------

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        name = (self.channels or {}).get(channel, channel.lower())
        return {"channel": {"id": channel, "name": name, "is_channel": True, "is_member": True}}

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        try:
            messages = self.thread(channel, str(params.get("ts") or ""))
        except KeyError:
            raise SlackApiError("thread_not_found") from None
        return {"messages": [self._as_api_message(m) for m in messages], "has_more": False}

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        newest_first = list(reversed(self.channel_messages(channel)))
        return {"messages": [self._as_api_message(m) for m in newest_first], "has_more": False}

    def _as_api_message(self, message: Message) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "message",
            "user": message.user,
            "bot_id": BOT_ID,
            "ts": message.ts,
            "text": message.text,
            "blocks": copy.deepcopy(message.blocks),
        }
        if message.thread_ts:
            body["thread_ts"] = message.thread_ts
        return body
