"""Slack: post messages (plain or with Approve/Deny buttons) through the Web API."""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import Field, model_validator

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result
from executors.errors import AuthError, ExecutorError, PermanentError, RateLimitedError, RetryableError
from executors.http import parse_retry_after

# Slack answers HTTP 200 with {"ok": false, "error": code}; the code alone decides the error type.
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
                         "missing_scope", "no_permission"})
RETRYABLE_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


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

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
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
        data = self._post(body)
        # The answer names the channel by ID even when called with "#name"; chat.delete needs the ID.
        return {"channel": data["channel"], "ts": data["ts"], "message_ts": data["ts"],
                "thread_ts": p.thread_ts}

    def undo_send_message(self, p: SendMessageParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        return self._delete(result["channel"], result["ts"])

    def do_request_approval(self, p: RequestApprovalParams, effect: Effect = NO_EFFECT) -> Result:
        body = {"channel": p.channel, "text": p.text,
                "blocks": approval_blocks(p.text, p.approval_id, p.approvers)}
        data = self._post(body)
        return {"channel": data["channel"], "ts": data["ts"], "approval_id": p.approval_id}

    def undo_request_approval(self, p: RequestApprovalParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        return self._delete(result["channel"], result["ts"])

    def check_auth(self) -> Result:
        data = self.call("auth.test", {})
        return {"ok": True, "team": data.get("team"), "user": data.get("user"),
                "team_id": data.get("team_id"), "user_id": data.get("user_id")}
