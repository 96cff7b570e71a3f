"""Slack: post messages (plain or with Approve/Deny buttons) through the Web API."""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import Field, model_validator

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result, example
from executors.errors import AuthError, ExecutorError, PermanentError, RateLimitedError, RetryableError
from executors.http import parse_retry_after

# Slack answers HTTP 200 with {"ok": false, "error": code}; the code alone decides the error type.
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
                         "missing_scope", "no_permission"})
RETRYABLE_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
# What conversations.history/replies accept: a channel's ID (public C, private G, DM D), never a #name.
_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{2,}$")

#: The effect key travels as message metadata of this event type (issue 11).
EFFECT_EVENT_TYPE = "opsq_effect"
#: A lookup reads from the first ambiguous attempt's start minus this: `since` is Redis' clock and a
#: message's ts is Slack's, and the two may disagree by a few seconds (or, on a badly kept host, minutes).
LOOKBACK_MARGIN_S = 300.0
#: One page of a lookup: large pages, few calls (conversations.* are Tier 3; Slack caps limit at 999).
LOOKUP_PAGE = 200


def slack_error(method: str, data: dict[str, Any], *, status: int | None = None,
                retry_after: float | None = None) -> ExecutorError:
    """The typed error for an ok=false answer: Slack's error code alone decides the type."""
    code = str(data.get("error") or "unknown_error")
    message = f"slack {method}: {code}"
    if code == "missing_scope" and data.get("needed"):
        message += f" (needed: {data['needed']})"
    if code in AUTH_ERRORS:
        return AuthError(message, status=status, platform="slack")
    if code == "ratelimited":
        return RateLimitedError(message, status=status, platform="slack", retry_after=retry_after)
    if code in RETRYABLE_ERRORS:
        return RetryableError(message, status=status, platform="slack", retry_after=retry_after)
    return PermanentError(message, status=status, platform="slack")


class SendMessageParams(ActionParams):
    """Post a message to a channel (a name or an ID), or as a reply in a thread (thread_ts)."""

    model_config = example({"channel": "#ops", "text": "deploy done"})

    channel: str = Field(min_length=1)
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _has_content(self) -> Self:
        if not self.text.strip() and not self.blocks:
            raise ValueError("text must not be empty unless blocks are given")
        return self


class RequestApprovalParams(ActionParams):
    """Post a message with Approve / Deny buttons for an approval (a workflow's approval gate posts one)."""

    model_config = example({"channel": "#ops", "text": "Deploy v2 to production?",
                            "approval_id": "apr-42"})

    channel: str = Field(min_length=1)
    # The section block that shows it holds at most 3000 characters.
    text: str = Field(min_length=1, max_length=3000)
    # It travels as each button's value, which Slack caps at 2000 characters.
    approval_id: str = Field(min_length=1, max_length=2000)
    approvers: list[str] = []


def _escape(text: str) -> str:
    # mrkdwn reads <...> as links and mentions; a plain name must not turn into one.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def approval_blocks(text: str, approval_id: str, approvers: list[str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if approvers:
        names = ", ".join(f"<@{a}>" if _USER_ID.match(a) else _escape(a) for a in approvers)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Approvers: {names}"}]})
    blocks.append({
        "type": "actions",
        "block_id": f"opsq_approval:{approval_id}"[:255],
        "elements": [
            {"type": "button", "action_id": "opsq_approve", "style": "primary", "value": approval_id,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "opsq_deny", "style": "danger", "value": approval_id,
             "text": {"type": "plain_text", "text": "Deny"}},
        ],
    })
    return blocks


class SlackExecutor(Executor):
    platform = "slack"
    actions = {"send_message": SendMessageParams, "request_approval": RequestApprovalParams}
    default_base_url = "https://slack.com/api"
    # chat.postMessage: about 1 per second per channel, with short bursts.
    default_rate_limit = RateLimit(rate=1.0, burst=10)
    order = 10

    def call(self, method: str, body: dict[str, Any], *,
             tolerate: frozenset[str] = frozenset()) -> dict[str, Any]:
        """One Web API call; raises the typed error for ok=false unless its code is in `tolerate`."""
        response = self.http.request("POST", self.url(f"/{method}"), platform=self.platform, json=body,
                                     headers=self._headers())
        try:
            data = response.json()
        except ValueError:
            raise PermanentError(f"slack {method}: response is not JSON", status=response.status_code,
                                 platform=self.platform) from None
        if not isinstance(data, dict):
            raise PermanentError(f"slack {method}: unexpected response", status=response.status_code,
                                 platform=self.platform)
        if data.get("ok") is True:
            return data
        if data.get("error") in tolerate:
            return data
        raise slack_error(method, data, status=response.status_code,
                          retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def read(self, method: str, args: dict[str, str]) -> dict[str, Any]:
        """A read method (conversations.*): query arguments on a GET, as Slack wants them (these methods
        do not accept a JSON body)."""
        response = self.http.request("GET", self.url(f"/{method}"), platform=self.platform, params=args,
                                     headers=self._headers())
        try:
            data = response.json()
        except ValueError:
            raise PermanentError(f"slack {method}: response is not JSON", status=response.status_code,
                                 platform=self.platform) from None
        if isinstance(data, dict) and data.get("ok") is True:
            return data
        if not isinstance(data, dict):
            raise PermanentError(f"slack {method}: unexpected response", status=response.status_code,
                                 platform=self.platform)
        raise slack_error(method, data, status=response.status_code,
                          retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def _post(self, body: dict[str, Any], effect: Effect = NO_EFFECT) -> dict[str, Any]:
        if effect.key is not None:
            # Slack's own way to tag a message with data for apps: it is stored with the message, never
            # shown to people, and read back by conversations.history (include_all_metadata).
            body = {**body, "metadata": {"event_type": EFFECT_EVENT_TYPE, "event_payload": {"key": effect.key}}}
        data = self.call("chat.postMessage", body)
        if not data.get("channel") or not data.get("ts"):
            raise PermanentError("slack chat.postMessage: answer lacks channel or ts", platform=self.platform)
        return data

    def _delete(self, channel: str, ts: str) -> Result:
        # message_not_found: deleted already (an earlier undo, or by hand), which is what undo wants.
        data = self.call("chat.delete", {"channel": channel, "ts": ts},
                         tolerate=frozenset({"message_not_found"}))
        return {"channel": channel, "ts": ts, "deleted": data.get("ok") is True,
                "already_undone": data.get("ok") is not True}

    def do_send_message(self, p: SendMessageParams, effect: Effect = NO_EFFECT) -> Result:
        body: dict[str, Any] = {"channel": p.channel, "text": p.text}
        if p.blocks is not None:
            body["blocks"] = p.blocks
        if p.thread_ts:
            body["thread_ts"] = p.thread_ts
        data = self._post(body, effect)
        # The answer names the channel by ID even when called with "#name"; chat.delete needs the ID.
        return {"channel": data["channel"], "ts": data["ts"], "message_ts": data["ts"],
                "thread_ts": p.thread_ts}

    def undo_send_message(self, p: SendMessageParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        return self._delete(result["channel"], result["ts"])

    def find_send_message(self, p: SendMessageParams, effect: Effect) -> Result | None:
        found = self._find_posted(p.channel, effect, thread_ts=p.thread_ts)
        if found is None:
            return None
        channel, ts = found
        return {"channel": channel, "ts": ts, "message_ts": ts, "thread_ts": p.thread_ts}

    def find_undone_send_message(self, p: SendMessageParams, result: Result) -> Result | None:
        return self._find_deleted(result["channel"], result["ts"], thread_ts=result.get("thread_ts"))

    def do_request_approval(self, p: RequestApprovalParams, effect: Effect = NO_EFFECT) -> Result:
        body = {"channel": p.channel, "text": p.text,
                "blocks": approval_blocks(p.text, p.approval_id, p.approvers)}
        data = self._post(body, effect)
        return {"channel": data["channel"], "ts": data["ts"], "approval_id": p.approval_id}

    def undo_request_approval(self, p: RequestApprovalParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        return self._delete(result["channel"], result["ts"])

    def find_request_approval(self, p: RequestApprovalParams, effect: Effect) -> Result | None:
        found = self._find_posted(p.channel, effect)
        if found is None:
            return None
        channel, ts = found
        return {"channel": channel, "ts": ts, "approval_id": p.approval_id}

    def find_undone_request_approval(self, p: RequestApprovalParams, result: Result) -> Result | None:
        return self._find_deleted(result["channel"], result["ts"])

    # -- the effect key's lookups (issue 11) ------------------------------------------------------------

    def _find_posted(self, channel: str, effect: Effect, *, thread_ts: str | None = None
                     ) -> tuple[str, str] | None:
        """(channel ID, ts) of the message whose metadata carries `effect.key`, posted since the first
        ambiguous attempt (less the clock margin); None when there is none. A thread reply is only in
        conversations.replies, a top-level message only in conversations.history."""
        if effect.key is None:
            return None
        channel = self._channel_id(channel)
        args = {"channel": channel, "include_all_metadata": "true", "limit": str(LOOKUP_PAGE)}
        if effect.since is not None:
            args["oldest"] = f"{max(0.0, effect.since - LOOKBACK_MARGIN_S):.6f}"
        method = "conversations.history"
        if thread_ts:
            method, args["ts"] = "conversations.replies", thread_ts
        seen: set[str] = set()
        while True:
            data = self.read(method, args)
            for message in data.get("messages") or []:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == EFFECT_EVENT_TYPE and payload.get("key") == effect.key \
                        and message.get("ts"):
                    return channel, str(message["ts"])
            cursor = str((data.get("response_metadata") or {}).get("next_cursor") or "")
            if not data.get("has_more") or not cursor or cursor in seen:
                return None
            seen.add(cursor)
            args["cursor"] = cursor

    def _channel_id(self, channel: str) -> str:
        """The ID conversations.* need, for a channel given as sending allows: an ID as is; a `#name` found
        with conversations.list (cached for the process: a channel's ID never changes, and a name not in the
        cache reads the list again).
        NotImplementedError (the action is then at-least-once, as run_attempt logs) for what cannot be
        resolved: a user's ID (a DM), a name not listed, or a token without channels:read/groups:read."""
        if _CHANNEL_ID.match(channel):
            return channel
        name = channel.removeprefix("#")
        if _USER_ID.match(name) or not name:
            raise NotImplementedError(f"slack: {channel!r} names a user, not a channel: a message sent to it "
                                      "cannot be looked up")
        cache: dict[str, str] = self.__dict__.setdefault("_channel_ids", {})
        if name in cache:
            return cache[name]
        args = {"types": "public_channel,private_channel", "exclude_archived": "true", "limit": "1000"}
        seen: set[str] = set()
        while True:
            try:
                data = self.read("conversations.list", args)
            except AuthError as exc:
                raise NotImplementedError(f"slack: cannot resolve {channel!r} to an ID ({exc.message}); add "
                                          "channels:read (and groups:read for private channels) to look "
                                          "messages up") from None
            for listed in data.get("channels") or []:
                if isinstance(listed, dict) and listed.get("id") and listed.get("name"):
                    cache[str(listed["name"])] = str(listed["id"])
            if name in cache:
                return cache[name]
            cursor = str((data.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor or cursor in seen:
                raise NotImplementedError(f"slack: no channel named {channel!r} is visible to the token")
            seen.add(cursor)
            args["cursor"] = cursor

    def _find_deleted(self, channel: str, ts: str, *, thread_ts: str | None = None) -> Result | None:
        """The undo's result when the message at `ts` is gone (deleted by the lost undo, or by hand); None
        while it is still there. The channel is the ID the post answered with."""
        args = {"channel": channel, "latest": ts, "oldest": ts, "inclusive": "true", "limit": "1"}
        if thread_ts and thread_ts != ts:
            try:
                data = self.read("conversations.replies", {**args, "ts": thread_ts, "limit": "2"})
            except PermanentError as exc:
                if "thread_not_found" not in exc.message:
                    raise
                data = {"messages": []}  # the whole thread is gone: so is the reply
        else:
            data = self.read("conversations.history", args)
        if any(str(m.get("ts")) == ts for m in data.get("messages") or []):
            return None
        return {"channel": channel, "ts": ts, "deleted": False, "already_undone": True}

    def check_auth(self) -> Result:
        data = self.call("auth.test", {})
        return {"ok": True, "team": data.get("team"), "user": data.get("user"),
                "team_id": data.get("team_id"), "user_id": data.get("user_id")}
