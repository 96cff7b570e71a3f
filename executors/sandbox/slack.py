"""Slack Web API emulation: chat.postMessage, chat.delete, conversations.history, auth.test."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from executors.sandbox.common import ApiError, Call, Emulator, Reply, format_seconds

MAX_TEXT = 40_000
_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{6,}$")


def channel_id(channel: str) -> str:
    """Slack answers with the channel's ID even when called with `#name`; callers must use the ID later."""
    if _CHANNEL_ID.match(channel):
        return channel
    digest = hashlib.sha1(channel.lstrip("#").encode()).hexdigest()[:10].upper()
    return f"C{digest}"


class SlackEmulator(Emulator):
    platform = "slack"

    def reset(self) -> None:
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._epoch = int(time.time())
        self._counter = 0

    def snapshot(self) -> dict[str, Any]:
        return {"messages": list(self.messages.values())}

    # Slack reports almost every failure as HTTP 200 with ok=false.
    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"ok": False, "error": code})

    def _refuse(self, code: str, **extra: Any) -> ApiError:
        return ApiError(Reply(200, {"ok": False, "error": code, **extra}))

    def unauthorized(self, code: str) -> Reply:
        return Reply(200, {"ok": False, "error": code})

    def rate_limited(self, retry_after: float) -> Reply:
        return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": format_seconds(retry_after)})

    def failure(self, status: int) -> Reply:
        code = "service_unavailable" if status == 503 else "internal_error"
        return Reply(status, {"ok": False, "error": code})

    def not_found(self, call: Call) -> Reply:
        return Reply(404, {"ok": False, "error": "unknown_method"})

    def handle(self, call: Call) -> Reply:
        if call.method not in ("GET", "POST") or len(call.segments) != 1:
            return self.not_found(call)
        args = call.body if call.method == "POST" and isinstance(call.body, dict) else dict(call.query)
        method = call.segments[0]
        if method == "chat.postMessage":
            return self._post_message(args)
        if method == "chat.delete":
            return self._delete(args)
        if method == "conversations.history":
            return self._history(args)
        if method == "auth.test":
            return Reply(200, {"ok": True, "url": "https://opsq-sandbox.slack.com/", "team": "opsq sandbox",
                               "user": "opsq", "team_id": "T0SANDBOX", "user_id": "U0SANDBOX",
                               "bot_id": "B0SANDBOX"})
        return self.not_found(call)

    def _channel(self, args: dict[str, Any]) -> str:
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel.strip():
            raise self._refuse("channel_not_found")
        return channel_id(channel.strip())

    def _post_message(self, args: dict[str, Any]) -> Reply:
        channel = self._channel(args)
        text = args.get("text") or ""
        blocks = args.get("blocks")
        if isinstance(blocks, str):  # form-encoded calls send blocks as a JSON string
            try:
                blocks = json.loads(blocks)
            except ValueError:
                raise self._refuse("invalid_blocks") from None
        if blocks is not None and not isinstance(blocks, list):
            raise self._refuse("invalid_blocks")
        if not isinstance(text, str):
            raise self._refuse("invalid_arguments")
        if not text and not blocks:
            raise self._refuse("no_text")
        if len(text) > MAX_TEXT:
            raise self._refuse("msg_too_long")
        self._counter += 1
        ts = f"{self._epoch}.{self._counter:06d}"
        message: dict[str, Any] = {"type": "message", "channel": channel, "ts": ts, "text": text,
                                   "user": "U0SANDBOX", "bot_id": "B0SANDBOX"}
        if blocks:
            message["blocks"] = blocks
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        self.messages[(channel, ts)] = message
        shown = {k: v for k, v in message.items() if k != "channel"}
        return Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": shown})

    def _delete(self, args: dict[str, Any]) -> Reply:
        channel = self._channel(args)
        ts = str(args.get("ts") or "")
        if self.messages.pop((channel, ts), None) is None:
            raise self._refuse("message_not_found")
        return Reply(200, {"ok": True, "channel": channel, "ts": ts})

    def _history(self, args: dict[str, Any]) -> Reply:
        channel = self._channel(args)
        found = [m for (c, _), m in self.messages.items() if c == channel]
        found.sort(key=lambda m: m["ts"], reverse=True)
        return Reply(200, {"ok": True, "messages": found, "has_more": False})
