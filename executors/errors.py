"""Typed executor errors: the worker decides retry, fail or alert from the type alone."""

from __future__ import annotations


class ExecutorError(Exception):
    """Base of every error an executor raises."""

    kind = "error"
    #: True when the failure says the platform itself is unhealthy (counts for the circuit breaker).
    health_failure = False

    def __init__(self, message: str, *, status: int | None = None, platform: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.platform = platform

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "message": self.message, "status": self.status}


class RetryableError(ExecutorError):
    """Timeouts, connection errors, 5xx, 429: worth another attempt later."""

    kind = "retryable"
    health_failure = True

    def __init__(self, message: str, *, status: int | None = None, platform: str | None = None,
                 retry_after: float | None = None, ambiguous: bool = False) -> None:
        super().__init__(message, status=status, platform=platform)
        self.retry_after = retry_after
        #: The request reached the platform and its answer was lost (a read timeout, a connection closed
        #: after the request was written, a 502/504 from a proxy whose upstream may have acted): the effect
        #: may exist. The next attempt looks it up before calling again (workers.attempt, the effect key).
        self.ambiguous = ambiguous

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "retry_after": self.retry_after, "ambiguous": self.ambiguous}


class RateLimitedError(RetryableError):
    """429: the platform is healthy but wants us to slow down; Retry-After is honoured."""

    kind = "rate_limited"
    health_failure = False


class PermanentError(ExecutorError):
    """Other 4xx and validation failures: another attempt would fail the same way."""

    kind = "permanent"


class InvalidParams(PermanentError):
    """Params that fail the action's schema."""

    kind = "invalid_params"


class AuthError(ExecutorError):
    """401/403 or a platform's own 'invalid_auth': never retried, an operator must fix credentials."""

    kind = "auth"
