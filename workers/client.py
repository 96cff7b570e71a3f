"""The client API: submit_action() validates, records and enqueues; ActionHandle follows it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, overload

import redis

from executors.errors import InvalidParams
from executors.registry import validate_action
from workers import cancel, scheduling, waiting
from workers.cancel import Cancelled
from workers.dev.broker_url import redact_redis_url
from workers.enqueue import send_action
from workers.errors import ConfigError, EnqueueError, SubmitError
from workers.guards.connection import guard_redis
from workers.guards.idempotency import claim, derive_key, release
from workers.observability import tracing
from workers.priorities import PRIORITY_NAMES
from workers.queues import queue_for
from workers.redaction import redact
from workers.settings import get_settings
from workers.store import actions as store
from workers.store.actions import ActionView

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class ActionHandle:
    id: str
    #: True when this submit found the idempotency key taken and returned the first action instead.
    deduplicated: bool = False

    def status(self) -> ActionView:
        return current_status(self.id)

    def wait(self, timeout: float = 60.0) -> ActionView:
        """Block until the action succeeded or failed for good; TimeoutError if it takes longer. The outcome is
        pushed by Redis the moment the attempt settles (workers.waiting), so this returns within a round trip
        of the worker's settle, before the database row is written behind."""
        return waiting.wait_one(self.id, timeout)


class Waitable(Protocol[T_co]):
    """A handle wait_all can wait for: an ActionHandle, or any handle with an id and a wait(timeout) that
    returns its final result (workflows.client.WorkflowHandle: a WorkflowView)."""

    @property
    def id(self) -> str: ...

    def wait(self, timeout: float) -> T_co: ...


@overload
def wait_all(handles: Iterable[ActionHandle | str], timeout: float = 300.0) -> list[ActionView]: ...
@overload
def wait_all(handles: Iterable[Waitable[T]], timeout: float = 300.0) -> list[T]: ...
@overload
def wait_all(handles: Iterable[Waitable[Any] | str], timeout: float = 300.0) -> list[Any]: ...


def wait_all(handles: Iterable[Waitable[Any] | str], timeout: float = 300.0) -> list[Any]:
    """Block until every action (handles or ids) succeeded or failed for good, and every other handle's wait()
    returned (a workflow: finished, or waiting for an approval); return their results in the handles' order
    (an ActionView for an action, a WorkflowView for a workflow). TimeoutError naming how many are still open
    if that takes longer than `timeout` in all. Actions are waited for together: outcomes are pushed
    (workers.waiting); the store is read once at the start, then only as a fallback for a notification that
    did not arrive, and once at the end for the results (with Redis' execution records, in one round trip)."""
    items = list(handles)
    deadline = time.monotonic() + timeout
    action_ids = [h if isinstance(h, str) else h.id for h in items if isinstance(h, (str, ActionHandle))]
    waiting.wait_many(action_ids, timeout)
    actions = iter(waiting.current_statuses(action_ids)) if action_ids else iter(())
    return [next(actions) if isinstance(h, (str, ActionHandle)) else h.wait(max(deadline - time.monotonic(), 0.0))
            for h in items]


def cancel_action(action_id: str, *, actor: str | None = None, why: str | None = None) -> Cancelled:
    """Cancel an action not started yet (scheduled, queued, retrying): durable, checked by the guards before
    any platform call. See workers.cancel."""
    return cancel.cancel_action(action_id, actor=actor, why=why)


def current_status(action_id: str) -> ActionView:
    """The stored record, with `running` from the live lease and a settled success from the execution record
    in Redis (workers.waiting.current_status)."""
    return waiting.current_status(action_id)


def check_submission(platform: str, action: str, params: Any, priority: str, max_attempts: int | None) -> None:
    if priority not in PRIORITY_NAMES:
        raise SubmitError(f"unknown priority {priority!r} (use one of: {', '.join(PRIORITY_NAMES)})")
    if not isinstance(params, dict):
        raise SubmitError(f"params must be a JSON object, got {type(params).__name__}")
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        raise SubmitError("max_attempts must be between 1 and 100")
    settings = get_settings()
    if platform in settings.registry and not settings.uses(platform):
        # The one place every submit passes (opsq submit, the HTTP API, replays): a platform this installation
        # does not call has no credentials here, and its action would only fail as auth at the worker.
        raise SubmitError(f"platform {platform!r} is not used by this installation: OPSQ_PLATFORMS is "
                          f"{','.join(settings.platforms or ())}; add it there (and its settings) to submit its "
                          "actions")
    limit = settings.max_params_bytes
    try:
        size = len(json.dumps(params, separators=(",", ":"), default=str).encode())
    except (TypeError, ValueError) as exc:
        raise SubmitError(f"params must be JSON: {exc}") from None
    if size > limit:
        raise SubmitError(f"params are {size} bytes of JSON; the limit is {limit} (OPSQ_MAX_PARAMS_BYTES): "
                          "put large content somewhere the platform can fetch it and pass its URL")
    try:
        validate_action(platform, action, params)
    except InvalidParams as exc:
        raise SubmitError(str(exc)) from None


def submit_action(platform: str, action: str, params: dict[str, Any] | None = None, *,
                  priority: str = "normal", idempotency_key: str | None = None, dedupe: bool = False,
                  max_attempts: int | None = None, fail_fast: bool = False, actor: str | None = None,
                  countdown: float | None = None, eta: datetime | None = None, expires_in: float | None = None,
                  _replay_of: str | None = None) -> ActionHandle:
    """Validate, record and enqueue one action.

    Bad input raises SubmitError and nothing is queued or stored. With `idempotency_key` (or
    `dedupe=True`, which derives the key from platform, action and params), a second submit while the
    key lives returns the first action's handle and enqueues nothing. `fail_fast` makes the action
    fail at once on an open circuit breaker instead of waiting for it. If the broker refuses the
    message, the record and the key are removed again and the error raised.

    `countdown` (seconds) or `eta` (an aware datetime): run it then, not now. The action is `scheduled` in the
    store and no message exists until it is due; the beat leader sends it then (workers.scheduling), once,
    not before. Celery's own ETA messages are not used: Redis redelivers them after the visibility timeout and
    workers hold them in memory (celery#2599, #4766). `expires_in` (seconds from now): its deadline; an
    action not started by then ends `expired` without a platform call."""
    params = {} if params is None else params
    check_submission(platform, action, params, priority, max_attempts)
    due, deadline = scheduling.when(countdown=countdown, eta=eta, expires_in=expires_in)
    if due is not None and redact(params, urls=True) != params:
        # A scheduled action is sent from its record, and the record keeps no secret (workers.redaction).
        raise SubmitError("a scheduled action's params are kept in the database until it is due, and secrets are "
                          "never stored there: these params hold one (a token, a password, a secret URL); keep "
                          "the secret in the platform's settings (OPSQ_*), or submit it when it is due")
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise SubmitError("idempotency_key must be 1 to 200 characters")
    settings = get_settings()
    if dedupe and idempotency_key is None:
        idempotency_key = derive_key(platform, action, params)
    action_id = uuid.uuid4().hex
    if idempotency_key is not None:
        try:
            first = claim(idempotency_key, action_id, settings.idempotency_ttl_s)
        except redis.RedisError as exc:
            raise EnqueueError(f"could not enqueue: {redis_cause(exc)}; nothing was queued or kept") from exc
        if first is not None:
            return ActionHandle(first, deduplicated=True)
    attempts = max_attempts or settings.max_attempts
    queue = queue_for(platform)
    # The trace of the action (OPSQ_TRACING) starts here: the publish below, the worker's run and its attempts
    # continue it through the message headers.
    with tracing.span("opsq.submit", {"opsq.platform": platform, "opsq.action": action, "opsq.action_id": action_id,
                                      "opsq.priority": priority}):
        try:
            store.create(action_id=action_id, platform=platform, action=action, params=params, priority=priority,
                         queue=queue, max_attempts=attempts, idempotency_key=idempotency_key, fail_fast=fail_fast,
                         replay_of=_replay_of, actor=actor, scheduled_for=due, expires_at=deadline)
            if due is not None:
                return ActionHandle(action_id)  # sent when due (workers.scheduling)
            try:
                send_action(action_id=action_id, platform=platform, action=action, params=params, queue=queue,
                            priority=priority, max_attempts=attempts, idempotency_key=idempotency_key,
                            fail_fast=fail_fast, expires_at=None if deadline is None else deadline.timestamp())
            except ConfigError as exc:
                store.discard(action_id, f"not enqueued: {exc}")
                raise
            except Exception as exc:
                cause = redis_cause(exc)
                store.discard(action_id, f"the broker refused the message: {cause}")
                raise EnqueueError(f"could not enqueue: {cause}; nothing was queued or kept") from exc
        except Exception:
            if idempotency_key is not None:
                release(idempotency_key, action_id)
            raise
    return ActionHandle(action_id)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it (kombu wraps redis-py's errors in its OperationalError)."""
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in out and len(out) < 10:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _memory_note() -> str:
    """`used X of maxmemory Y, policy P`, asked of the server that refused (INFO is allowed when full)."""
    try:
        info = guard_redis().info("memory")
    except redis.RedisError:
        return "maxmemory reached"
    used, limit = info.get("used_memory_human", "?"), info.get("maxmemory_human", "?")
    return f"maxmemory {limit}, {used} used, policy {info.get('maxmemory_policy', '?')}"


def _redis_url_shown() -> str:
    """OPSQ_REDIS_URL as an error shows it: its password masked."""
    try:
        url = get_settings().redis_url
    except Exception:  # the settings themselves refused: the error names the URL without them
        url = None
    return f"OPSQ_REDIS_URL={redact_redis_url(url)}" if url else "OPSQ_REDIS_URL (not set)"


def redis_cause(exc: BaseException) -> str:
    """What really went wrong talking to Redis, in words an operator acts on: out of memory, a password
    refused, the connection refused, no answer. "Is Redis up?" for all of them sent people to restart a
    Redis that was up and full."""
    chain = _chain(exc)
    text = " ".join(" ".join(str(e).split()) for e in chain)
    lowered = text.lower()
    if any(isinstance(e, redis.exceptions.OutOfMemoryError) for e in chain) or "maxmemory" in lowered:
        return (f"Redis is out of memory ({_memory_note()}): it refuses new messages; free memory or raise "
                "maxmemory (opsq health; docs/RUNBOOK.md, Redis memory)")
    if (any(isinstance(e, redis.exceptions.AuthenticationError) for e in chain) or "noauth" in lowered
            or "wrongpass" in lowered or "invalid username-password" in lowered):
        first = next((e for e in chain if isinstance(e, redis.exceptions.AuthenticationError)), chain[0])
        return (f"Redis refused the credentials ({' '.join(str(first).split())}): check the password in "
                "OPSQ_REDIS_URL")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in lowered:
        return (f"Redis refused the connection ({' '.join(str(exc).split())}): is it running at "
                f"{_redis_url_shown()}?")
    if any(isinstance(e, (TimeoutError, redis.exceptions.TimeoutError)) for e in chain) or "timed out" in lowered:
        return f"Redis did not answer in time ({' '.join(str(exc).split())}) at {_redis_url_shown()}"
    if any(isinstance(e, redis.exceptions.ConnectionError) for e in chain):
        return f"cannot reach Redis ({' '.join(str(exc).split())}) at {_redis_url_shown()}"
    return f"the broker refused the message ({' '.join(str(exc).split())})"
