"""Approvals from Slack: the interactivity payloads Slack posts when someone clicks a request_approval message's
Approve or Deny button (executors.slack.approval_blocks).

A request is believed only when its signature (`X-Slack-Signature`, HMAC-SHA256 `v0` of `v0:<timestamp>:<body>`
with the app's signing secret) matches, compared in constant time, its timestamp is within five minutes, and that
exact signature was not seen before (a replayed request is refused: each signature is remembered in Redis for the
window, so every API process shares the memory). The Slack user must be in OPSQ_SLACK_APPROVERS, which names the
approver they are; the decision is the library's (workflows.client.approve/deny), policy included."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

import httpx

from workers.errors import NotAllowed
from workers.guards.connection import guard_redis
from workers.settings import get_settings
from workflows import client as workflows

log = logging.getLogger("opsq.api.slack")

WINDOW_S = 300
ACTIONS = {"opsq_approve": "approve", "opsq_deny": "deny"}


class Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def verify(raw: bytes, timestamp: str | None, signature: str | None, secret: str, now: float) -> None:
    if not timestamp or not signature:
        raise Refused(401, "X-Slack-Request-Timestamp and X-Slack-Signature are required")
    try:
        at = int(timestamp)
    except ValueError:
        raise Refused(401, "X-Slack-Request-Timestamp is not a Unix time") from None
    if abs(now - at) > WINDOW_S:
        raise Refused(401, f"the request is {abs(now - at):.0f}s old; Slack requests are accepted for {WINDOW_S}s")
    expected = "v0=" + hmac.new(secret.encode(), f"v0:{at}:".encode() + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise Refused(401, "the signature does not match (OPSQ_SLACK_SIGNING_SECRET)")


def first_time(signature: str) -> bool:
    """True the first time this signature is seen within the window (SET NX: one answer for every process)."""
    return bool(guard_redis().set(f"opsq:slack:seen:{signature}", "1", nx=True, ex=WINDOW_S * 2))


def payload_of(raw: bytes) -> dict[str, Any]:
    try:
        form = parse_qs(raw.decode(), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise Refused(400, "the body is not a Slack interaction (a form with a JSON `payload`)") from None
    if not isinstance(payload, dict):
        raise Refused(400, "the payload is not a JSON object")
    return payload


def handle(raw: bytes, timestamp: str | None, signature: str | None) -> dict[str, Any]:
    """Check, decide, and update the message that was clicked. Raises Refused; library refusals propagate
    (NotAllowed, OpsqError, NotFound) for the API's handlers."""
    settings = get_settings()
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    if not secret:
        raise Refused(503, "Slack interactions are not configured (OPSQ_SLACK_SIGNING_SECRET)")
    verify(raw, timestamp, signature, secret, time.time())
    assert signature is not None
    if not first_time(signature):
        raise Refused(409, "this request was received already (a replayed Slack request)")
    payload = payload_of(raw)
    actions = payload.get("actions") or []
    user = str((payload.get("user") or {}).get("id") or "")
    if payload.get("type") != "block_actions" or not actions or actions[0].get("action_id") not in ACTIONS:
        raise Refused(400, "not an opsqueue approval button (block_actions with opsq_approve or opsq_deny)")
    decision, approval_id = ACTIONS[actions[0]["action_id"]], str(actions[0].get("value") or "")
    approver = settings.slack_approvers.get(user)
    if approver is None:
        raise NotAllowed(f"Slack user {user or '?'} is not an approver (OPSQ_SLACK_APPROVERS)")
    note = f"in Slack ({user})"
    if decision == "approve":
        handle_ = workflows.approve(approval_id, approver, note)
        status, count, required = workflows.approval_progress(approval_id)
        done = status != "pending"
        text = (f"Approved by <@{user}> ({approver}): workflow {handle_.id} resumes" if done else
                f"<@{user}> ({approver}) approved: {count} of {required} approvals, waiting for more")
    else:
        handle_ = workflows.deny(approval_id, f"denied {note}", approver)
        done, text = True, f"Denied by <@{user}> ({approver}): workflow {handle_.id} rolls back"
    _answer(str(payload.get("response_url") or ""), text, replace=done)
    return {"id": approval_id, "result": text}


def _answer(response_url: str, text: str, *, replace: bool) -> None:
    """Show the decision where it was made: the message's buttons give way to who decided. Best effort: the
    decision stands whatever Slack answers (it is in the store and the audit trail)."""
    if not response_url:
        return
    try:
        httpx.post(response_url, json={"replace_original": replace, "text": text}, timeout=5)
    except httpx.HTTPError as exc:
        log.warning("could not update the Slack message: %s", exc)
