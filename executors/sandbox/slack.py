"""Slack Web API emulation: chat.postMessage, chat.delete, conversations.history and .replies, auth.test; and
interactivity: a button "clicked" (a signed block_actions payload posted to an app) and its response_url.

Messages carry `metadata` (event_type, event_payload) as the real API stores it, and the conversations
methods read it back only with include_all_metadata=true; they page with limit and cursor and filter by
oldest/latest/inclusive like the real ones, and, like them, take form or query arguments, not JSON: the
effect-key lookups (issue 11) are exercised exactly as they would run against Slack."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import urlencode

from executors.sandbox.common import ApiError, Call, Emulator, Reply, format_seconds

MAX_TEXT = 40_000
#: conversations.history/replies: the default page and the cap (Slack's documented 100 and 999).
DEFAULT_LIMIT = 100
MAX_LIMIT = 999
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
        # Slack's ts is the post time in microseconds, unique per channel: lookups filter on it (oldest).
        self._last_us = 0
        # id -> name of every channel posted to: what conversations.list shows (the sandbox has no other
        # notion of a channel existing).
        self.channels: dict[str, str] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"messages": list(self.messages.values())}

    # Slack reports almost every failure as HTTP 200 with ok=false.
    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"ok": False, "error": code})

    def _refuse(self, code: str, **extra: Any) -> ApiError:
        return ApiError(Reply(200, {"ok": False, "error": code, **extra}))

    def unauthorized(self, code: str) -> Reply:
        return Reply(200, {"ok": False, "error": code})

    def rate_limited(self, retry_after: float, status: int = 429) -> Reply:
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
        if method in ("conversations.history", "conversations.replies", "conversations.list"):
            # Read methods take query or form arguments; Slack ignores a JSON body for them.
            content_type = (call.headers.get("Content-Type") or "").lower()
            read_args = dict(call.query)
            if call.method == "POST" and isinstance(call.body, dict) and "json" not in content_type:
                read_args.update(call.body)
            if method == "conversations.history":
                return self._history(read_args)
            if method == "conversations.list":
                return self._list_channels(read_args)
            return self._replies(read_args)
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
        given = str(args["channel"]).strip()
        self.channels.setdefault(channel, given.lstrip("#") if given != channel else f"ch-{channel.lower()}")
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
        metadata = self._metadata(args.get("metadata"))
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        ts = f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"
        message: dict[str, Any] = {"type": "message", "channel": channel, "ts": ts, "text": text,
                                   "user": "U0SANDBOX", "bot_id": "B0SANDBOX"}
        if blocks:
            message["blocks"] = blocks
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        if metadata is not None:
            message["metadata"] = metadata
        self.messages[(channel, ts)] = message
        shown = {k: v for k, v in message.items() if k != "channel"}
        return Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": shown})

    def respond(self, channel: str, ts: str, body: Any) -> Reply:
        """What an app posts to a click's response_url: `replace_original` updates the message (Slack shows who
        decided in place of the buttons); otherwise the text is kept as a reply to it."""
        message = self.messages.get((channel, ts))
        if message is None or not isinstance(body, dict):
            return Reply(404, {"ok": False, "error": "expired_url"})
        if body.get("replace_original"):
            message["text"] = str(body.get("text") or "")
            message["edited"] = {"user": "U0SANDBOX", "ts": ts}
            if body.get("blocks"):
                message["blocks"] = body["blocks"]
            else:
                message.pop("blocks", None)
        else:
            message.setdefault("responses", []).append(str(body.get("text") or ""))
        return Reply(200, {"ok": True})

    def _metadata(self, value: Any) -> dict[str, Any] | None:
        """chat.postMessage's `metadata`: an object (a JSON string in form calls) with a string event_type and
        an object event_payload; Slack refuses anything else with invalid_metadata_format."""
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise self._refuse("invalid_metadata_format") from None
        if not isinstance(value, dict) or not isinstance(value.get("event_type"), str) \
                or not value["event_type"] or not isinstance(value.get("event_payload"), dict):
            raise self._refuse("invalid_metadata_format")
        return {"event_type": value["event_type"], "event_payload": value["event_payload"]}

    def _delete(self, args: dict[str, Any]) -> Reply:
        channel = self._channel(args)
        ts = str(args.get("ts") or "")
        if self.messages.pop((channel, ts), None) is None:
            raise self._refuse("message_not_found")
        return Reply(200, {"ok": True, "channel": channel, "ts": ts})

    def _history(self, args: dict[str, Any]) -> Reply:
        """The channel's messages, newest first; thread replies are not in it (they are in replies)."""
        channel = self._read_channel(args)
        found = [m for (c, _), m in self.messages.items()
                 if c == channel and m.get("thread_ts", m["ts"]) == m["ts"]]
        found.sort(key=lambda m: _ts_key(m["ts"]), reverse=True)
        return self._page(found, args, newest_first=True)

    def _replies(self, args: dict[str, Any]) -> Reply:
        """A thread, oldest first: its parent (always, as Slack returns it), then the replies in range."""
        channel = self._read_channel(args)
        ts = str(args.get("ts") or "")
        if not ts:
            raise self._refuse("invalid_arguments")
        parent = self.messages.get((channel, ts))
        if parent is None:
            raise self._refuse("thread_not_found")
        thread_ts = parent.get("thread_ts", ts)
        replies = [m for (c, t), m in self.messages.items()
                   if c == channel and m.get("thread_ts") == thread_ts and t != thread_ts]
        replies.sort(key=lambda m: _ts_key(m["ts"]))
        head = self.messages.get((channel, thread_ts))
        return self._page(replies, args, newest_first=False, head=head)

    def _list_channels(self, args: dict[str, Any]) -> Reply:
        """conversations.list: the channels, by name order, `limit` a page (up to 1000), an offset cursor."""
        try:
            limit = min(int(args.get("limit") or DEFAULT_LIMIT), 1000)
            offset = int(base64.urlsafe_b64decode(str(args["cursor"])).decode().removeprefix("offset:")) \
                if args.get("cursor") else 0
        except (ValueError, TypeError):
            raise self._refuse("invalid_cursor") from None
        if limit < 1:
            raise self._refuse("invalid_limit")
        listed = [{"id": cid, "name": name, "is_channel": True, "is_private": cid.startswith("G"),
                   "is_archived": False} for cid, name in sorted(self.channels.items(), key=lambda c: c[1])]
        page = listed[offset:offset + limit]
        more = offset + limit < len(listed)
        cursor = base64.urlsafe_b64encode(f"offset:{offset + limit}".encode()).decode() if more else ""
        return Reply(200, {"ok": True, "channels": page, "response_metadata": {"next_cursor": cursor}})

    def _read_channel(self, args: dict[str, Any]) -> str:
        """The read methods want the channel's ID: a `#name` is channel_not_found, as on Slack."""
        channel = args.get("channel")
        if not isinstance(channel, str) or not _CHANNEL_ID.match(channel.strip()):
            raise self._refuse("channel_not_found")
        return channel.strip()

    def _page(self, messages: list[dict[str, Any]], args: dict[str, Any], *, newest_first: bool,
              head: dict[str, Any] | None = None) -> Reply:
        """oldest/latest (exclusive unless inclusive), limit and an opaque cursor, as the real methods do;
        metadata only with include_all_metadata. The cursor names the last ts served (Slack's own cursors
        decode to `next_ts:...`), so messages posted or deleted between pages shift nothing."""
        inclusive = _truthy(args.get("inclusive"))
        try:
            oldest = _ts_key(str(args.get("oldest") or "0"))
            latest = _ts_key(str(args["latest"])) if args.get("latest") else None
            limit = int(args.get("limit") or DEFAULT_LIMIT)
            after = _ts_key(base64.urlsafe_b64decode(str(args["cursor"])).decode().removeprefix("next_ts:")) \
                if args.get("cursor") else None
        except (ValueError, TypeError):
            raise self._refuse("invalid_arguments") from None
        if limit < 1:
            raise self._refuse("invalid_limit")
        limit = min(limit, MAX_LIMIT)

        def in_range(m: dict[str, Any]) -> bool:
            key = _ts_key(m["ts"])
            after = key >= oldest if inclusive else key > oldest
            before = latest is None or (key <= latest if inclusive else key < latest)
            return after and before

        def not_served(m: dict[str, Any]) -> bool:
            if after is None:
                return True
            return _ts_key(m["ts"]) < after if newest_first else _ts_key(m["ts"]) > after

        matching = [m for m in messages if in_range(m) and not_served(m)]
        page = matching[:limit]
        if head is not None and after is None:
            page = [head, *page]
        with_metadata = _truthy(args.get("include_all_metadata"))
        shown = [{k: v for k, v in m.items() if k != "channel" and (with_metadata or k != "metadata")}
                 for m in page]
        more = len(matching) > limit
        body: dict[str, Any] = {"ok": True, "messages": shown, "has_more": more}
        next_cursor = base64.urlsafe_b64encode(f"next_ts:{page[-1]['ts']}".encode()).decode() if more else ""
        body["response_metadata"] = {"next_cursor": next_cursor}
        return Reply(200, body)


def _ts_key(ts: str) -> tuple[int, int]:
    """A ts as a number that compares exactly ("1700000000.000010" > "1700000000.000009")."""
    whole, _, frac = ts.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"bad ts {ts!r}")
    return int(whole), int(frac.ljust(6, "0")[:6])


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


# -- interactivity: a "click" on a message's button, as Slack posts it to an app's interactivity URL -------------

def interaction(message: dict[str, Any], *, user_id: str, action_id: str, response_url: str) -> dict[str, Any]:
    """The block_actions payload Slack sends when `user_id` clicks the button `action_id` of `message`."""
    button = next((e for b in message.get("blocks") or [] if b.get("type") == "actions"
                   for e in b.get("elements") or [] if e.get("action_id") == action_id), None)
    if button is None:
        raise ValueError(f"the message has no button {action_id!r}")
    now = f"{time.time():.6f}"
    return {"type": "block_actions", "user": {"id": user_id, "username": user_id.lower(), "team_id": "T0SANDBOX"},
            "api_app_id": "A0SANDBOX", "team": {"id": "T0SANDBOX", "domain": "opsq-sandbox"},
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel"]},
            "channel": {"id": message["channel"]}, "message": {k: v for k, v in message.items() if k != "channel"},
            "response_url": response_url, "trigger_id": f"{now}.sandbox",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "", "value": button.get("value"),
                         "action_ts": now}]}


def signed(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """Slack's request signature (v0): HMAC-SHA256 of `v0:<timestamp>:<body>` with the app's signing secret."""
    digest = hmac.new(secret.encode(), b"v0:%d:" % timestamp + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def form_body(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
