"""What a guard is: the attempt it sees, its verdict before the call, the outcome after, the protocol."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from workers.status import Verdict


class RunState(StrEnum):
    """The `state` of an action's execution record in Redis (keys.run; written by the Lua scripts in
    workers.guards.scripts): a live lease, or the outcome the guards answer a redelivery with."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    #: an attempt failed in a way that may have acted (its answer lost); the next one reconciles first
    AMBIGUOUS = "ambiguous"


class BreakerState(StrEnum):
    """A platform's circuit breaker (keys.breaker; its transitions live in the Lua scripts)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def new_token() -> str:
    """Who holds a running action: unique per attempt, readable in `opsq idempotency show`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Attempt:
    action_id: str
    platform: str
    action: str
    attempt: int
    fail_fast: bool = False
    token: str = field(default_factory=new_token)
    #: what the platform can find the effect by (executors.base.Effect): the idempotency key when the action
    #: has one, else its id; stable across attempts, redeliveries and replays
    effect_key: str | None = None
    #: "action", or "compensation" (a workflow step's undo): the metrics count each apart
    role: str = "action"
    #: the action's deadline (Unix time): not admitted by then, it ends `expired` (workers.status)
    expires_at: float | None = None
    #: the params the call is made with: where the keys of per-key limits are read from (workers.guards.limits);
    #: None: the action is under its platform's limits only (and those read from settings, as `token`)
    params: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Admission:
    """`verdict` (workers.status.Verdict) is one of: run (call the platform), done (return `result`, the
    platform was already called), failed (the action already failed for good: `error`), or a wait — busy
    (running elsewhere), open / half_open_busy (breaker), rate_limited (no token, or paused after a 429),
    concurrency_limited (a key's concurrency limit reached) — to be re-scheduled after `wait_s`
    without using up an attempt; open_fail when the action chose to fail fast on an open breaker; cancelled
    (`error` says by whom, and `reconcile` that an earlier attempt may have acted) or expired: never call it."""

    verdict: str = Verdict.RUN
    wait_s: float = 0.0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    probe: bool = False
    #: run, but look the effect up first: an earlier attempt may have acted (its answer was lost)
    reconcile: bool = False
    #: when that earlier attempt started (Redis' clock), where a lookup starts searching
    since: float | None = None
    #: the action's keys under per-key limits (workers.guards.limits.LimitKey): settle gives their concurrency
    #: leases back, and a 429 pauses their buckets
    limit_keys: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def run(self) -> bool:
        return self.verdict == Verdict.RUN


@dataclass(frozen=True)
class Outcome:
    ok: bool
    result: dict[str, Any] | None = None
    error_kind: str | None = None
    error: str | None = None
    health_failure: bool = False
    final: bool = False
    #: the failure may have acted (its answer was lost): the next attempt reconciles first
    ambiguous: bool = False
    #: seconds: the platform call alone, and the whole attempt from its admission (metrics; None: not timed)
    call_s: float | None = field(default=None, compare=False)
    attempt_s: float | None = field(default=None, compare=False)
    #: the effect of an earlier attempt was found on the platform instead of calling
    reconciled: bool = False
    #: seconds the platform asked us to stop (a 429's Retry-After): the action's limited keys are paused that long
    #: for every worker (workers.guards.scripts.SETTLE); None: no pause
    pause_s: float | None = None


class Guard(Protocol):
    def admit(self, attempt: Attempt) -> Admission: ...

    def settle(self, attempt: Attempt, admission: Admission, outcome: Outcome) -> str: ...


class PassThrough:
    def admit(self, attempt: Attempt) -> Admission:
        return Admission()

    def settle(self, attempt: Attempt, admission: Admission, outcome: Outcome) -> str:
        return BreakerState.CLOSED
