"""The seam for the Redis guards (circuit breaker, idempotency, global rate limit).

Like Dramatiq's middleware, a guard is a small pair of hooks around one attempt: `admit` before the
platform is called (one Redis round trip for all checks) and `settle` after (one more). Until the
guards land, `PassThrough` admits everything and records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Attempt:
    action_id: str
    platform: str
    action: str
    attempt: int
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Admission:
    """`run`: call the platform. Otherwise either `result` (already done: return it) or
    `wait_s` (re-schedule the action that long; not counted as an attempt)."""

    run: bool = True
    wait_s: float | None = None
    result: dict[str, Any] | None = None
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    result: dict[str, Any] | None = None
    error_kind: str | None = None
    health_failure: bool = False


class Guard(Protocol):
    def admit(self, attempt: Attempt) -> Admission: ...

    def settle(self, attempt: Attempt, outcome: Outcome) -> None: ...


class PassThrough:
    def admit(self, attempt: Attempt) -> Admission:
        return Admission()

    def settle(self, attempt: Attempt, outcome: Outcome) -> None:
        return None


_guard: Guard = PassThrough()


def get_guard() -> Guard:
    return _guard
