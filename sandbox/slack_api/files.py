"""The external file upload flow in the Slack stand-in: announce, POST the bytes, complete (and share)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from sandbox.slack_api.model import Message, SlackApiError, UploadedFile
from sandbox.slack_api.state import SlackState


class FilesApi(SlackState):
    """files.getUploadURLExternal, the upload URL it hands out, and files.completeUploadExternal."""

    def files(self, channel: str | None = None, thread_ts: str | None = None) -> list[UploadedFile]:
        """Files shared by files.completeUploadExternal (in ``channel``/``thread_ts`` when given), in order."""
        with self._lock:
            return copy.deepcopy(
                [
                    f
                    for f in self._files.values()
                    if f.completed
                    and (channel is None or f.channel == channel)
                    and (thread_ts is None or f.thread_ts == thread_ts)
                ]
            )

    def handle_upload(self, file_id: str, data: bytes) -> tuple[int, str]:
        """The upload URL of files.getUploadURLExternal: the file's bytes, exactly ``length`` of them, once."""
        with self._lock:
            f = self._files.get(file_id)
            params = {"file_id": file_id, "bytes": len(data)}
            if f is None or f.completed:
                self._record("upload", params, 404, "invalid_url")
                return 404, "invalid upload URL"
            if len(data) != f.length:  # Slack refuses bytes that do not match the length announced
                self._record("upload", params, 400, "length_mismatch")
                return 400, f"expected {f.length} bytes, got {len(data)}"
            f.content = bytes(data)
            self._record("upload", params, 200, None)
            return 200, f"OK - {len(data)}"

    def _get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = str(params.get("filename") or "")
        try:
            length = int(str(params.get("length", "")))
        except ValueError:
            raise SlackApiError("invalid_arguments") from None
        if not filename or length <= 0:
            raise SlackApiError("invalid_arguments")
        alt_txt = params.get("alt_txt")
        if alt_txt is not None and len(str(alt_txt)) > 1000:
            raise SlackApiError("alt_txt_too_large")
        file_id = f"F{len(self._files) + 1:08d}"
        url = f"{self.url}/upload/v1/{file_id}"
        snippet = params.get("snippet_type")
        self._files[file_id] = UploadedFile(
            file_id, filename, length, url, str(alt_txt) if alt_txt else None, str(snippet) if snippet else None
        )
        return {"upload_url": url, "file_id": file_id}

    def _complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("files")
        try:
            entries = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            raise SlackApiError("invalid_arguments") from None
        if (
            not isinstance(entries, list)
            or not entries
            or not all(isinstance(e, dict) and e.get("id") for e in entries)
        ):
            raise SlackApiError("invalid_arguments")
        channel = params.get("channel_id")
        if params.get("channels"):
            channels = [c for c in str(params["channels"]).split(",") if c]
            if channel or len(channels) != 1:  # thread_ts or not, we share into one channel only
                raise SlackApiError("invalid_arguments")
            channel = channels[0]
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        if thread_ts and not channel:
            raise SlackApiError("invalid_arguments")  # a thread needs its channel
        if channel:
            channel = self._check_channel(channel)
        if thread_ts:
            root = self._messages.get((str(channel), thread_ts))
            if root is None or root.deleted:
                raise SlackApiError("thread_not_found")
            if root.is_reply:  # Slack: "Never use a reply's ts value; use its parent instead"
                raise SlackApiError("invalid_thread_ts")
        files: list[UploadedFile] = []
        for e in entries:
            f = self._files.get(str(e["id"]))
            if f is None or f.completed:
                raise SlackApiError("file_not_found")
            if f.content is None:  # the bytes never reached the upload URL
                raise SlackApiError("file_upload_incomplete")
            files.append(f)
        for f, e in zip(files, entries, strict=True):
            f.completed = True
            f.title = str(e.get("title") or f.filename)
            f.channel = channel
            f.thread_ts = thread_ts
        if channel:
            ts = self._next_ts()
            text = str(params.get("initial_comment") or "")
            self._messages[(channel, ts)] = Message(
                channel,
                ts,
                text,
                [],
                self.bot_user_id,
                thread_ts,
                posted_at=time.time(),
                files=[{"id": f.id, "name": f.filename, "title": f.title} for f in files],
            )
        return {"files": [{"id": f.id, "name": f.filename, "title": f.title, "size": f.length} for f in files]}
