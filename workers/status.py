"""The runtime's status vocabularies. StrEnums: a member equals its string, so stored rows, JSON and
the CLI's `--status` options keep reading and writing plain text."""

from __future__ import annotations

from enum import StrEnum


class ActionStatus(StrEnum):
    # Submitted for later (countdown / eta): no message exists until it is due (workers.scheduling).
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    # Never stored: `running` is read from the live lease in Redis (workers.client.current_status).
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # A workflow's step that never ran: its workflow stopped (rolled back, resolved) before its turn.
    SKIPPED = "skipped"
    # Cancelled by an operator or a service (workers.cancel) before it called its platform.
    CANCELLED = "cancelled"
    # Its deadline (expires_in) passed before it was admitted: pointless now, so not run and not dead-lettered.
    EXPIRED = "expired"


FINAL_ACTION_STATUSES: frozenset[ActionStatus] = frozenset(
    {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.SKIPPED, ActionStatus.CANCELLED,
     ActionStatus.EXPIRED})
OPEN_ACTION_STATUSES: frozenset[ActionStatus] = frozenset({ActionStatus.QUEUED, ActionStatus.RETRYING})


class Verdict(StrEnum):
    """What the guards say before an attempt (workers.guards.Admission.verdict)."""

    RUN = "run"  # call the platform
    DONE = "done"  # already called: return the stored result
    FAILED = "failed"  # already failed for good
    BUSY = "busy"  # running elsewhere: wait
    OPEN = "open"  # breaker open: wait
    HALF_OPEN_BUSY = "half_open_busy"  # breaker half-open, every probe slot taken: wait
    RATE_LIMITED = "rate_limited"  # no token (the platform's or a key's), or a key paused after a 429: wait
    OPEN_FAIL = "open_fail"  # breaker open and the action chose to fail fast
    UNREPLICATED = "unreplicated"  # the claim reached no replica in time (OPSQ_REDIS_REPLICA_ACKS): wait
    CONCURRENCY_LIMITED = "concurrency_limited"  # a key has as many actions running as its limit allows: wait
    CANCELLED = "cancelled"  # cancelled (workers.cancel): never call it
    EXPIRED = "expired"  # its deadline passed: never call it


class ErrorKind(StrEnum):
    """Why an attempt or an action failed. The executors' kinds (executors.errors) plus the runtime's."""

    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    AUTH = "auth"
    INVALID_PARAMS = "invalid_params"
    TEMPLATE = "template"  # a workflow step's template found nothing to render
    INTERNAL = "internal"  # a bug in an executor (it raised something that is not an ExecutorError)
    RATE_LIMITED = "rate_limited"  # 429 from the platform: retried, Retry-After honoured
    CIRCUIT_OPEN = "circuit_open"  # fail_fast on an open breaker
    STUCK = "stuck"  # lost, and given up on by the stuck detector
    PURGED = "purged"  # dropped from its queue by an operator (opsq queue clear)


# What goes to the dead letters, to be replayed by an operator: the failures that running the action again
# later can cure. Retries ran out (retryable, rate_limited); the credentials were refused (replay once they
# are fixed); an executor crashed (replay after the fix); fail-fast on an open breaker; lost for good
# (stuck). Not the params the platform refused (permanent, invalid_params, template): they would fail the
# same way again; not what an operator dropped on purpose (purged); not a kind this list does not name.
DEAD_LETTER_KINDS: frozenset[str] = frozenset({ErrorKind.RETRYABLE, ErrorKind.RATE_LIMITED, ErrorKind.AUTH,
                                               ErrorKind.INTERNAL, ErrorKind.CIRCUIT_OPEN, ErrorKind.STUCK})


def is_dead_lettered(kind: str | None, *, step: bool) -> bool:
    """Whether an action that failed for good with this kind goes to the dead letters. Never a workflow's
    step: a step is not run on its own; its workflow rolls back, and is resumed or retried as a whole.
    workers.store.actions.mark_failed applies it to every failure, whichever path records it."""
    return not step and kind in DEAD_LETTER_KINDS
