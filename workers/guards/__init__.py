"""The guards around every platform call: circuit breaker, idempotency, global rate limit.

Like Dramatiq's middleware, a guard is a small pair of hooks around one attempt: `admit` before the
platform is called and `settle` after. The Redis guard (workers.guards.redis_guard) does each in one
Redis round trip; `PassThrough` admits everything (OPSQ_GUARDS_ENABLED=false).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


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


@dataclass(frozen=True)
class Admission:
    """`verdict` is one of: run (call the platform), done (return `result`, the platform was already
    called), failed (the action already failed for good: `error`), or a wait — busy (running
    elsewhere), open / half_open_busy (breaker), rate_limited — to be re-scheduled after `wait_s`
    without using up an attempt; open_fail when the action chose to fail fast on an open breaker."""

    verdict: str = "run"
    wait_s: float = 0.0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    probe: bool = False

    @property
    def run(self) -> bool:
        return self.verdict == "run"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    result: dict[str, Any] | None = None
    error_kind: str | None = None
    error: str | None = None
    health_failure: bool = False
    final: bool = False


class Guard(Protocol):
    def admit(self, attempt: Attempt) -> Admission: ...

    def settle(self, attempt: Attempt, admission: Admission, outcome: Outcome) -> str: ...


class PassThrough:
    def admit(self, attempt: Attempt) -> Admission:
        return Admission()

    def settle(self, attempt: Attempt, admission: Admission, outcome: Outcome) -> str:
        return "closed"


_guard: tuple[int, Guard] | None = None


def get_guard() -> Guard:
    global _guard
    if _guard is None or _guard[0] != os.getpid():
        from workers.settings import get_settings

        settings = get_settings()
        if settings.guards_enabled:
            from workers.guards.redis_guard import RedisGuard

            guard: Guard = RedisGuard(settings)
        else:
            guard = PassThrough()
        _guard = (os.getpid(), guard)
    return _guard[1]


def reset_guard() -> None:
    global _guard
    _guard = None
