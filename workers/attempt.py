"""One guarded attempt: admit -> call the platform -> classify the outcome -> settle -> retry decision.

Every platform call opsqueue makes goes through `run_attempt`: an action (workers.tasks.execute_action),
a workflow's step (the same task) and a compensation (workflows.tasks.compensate_step). The caller says
what to call; this module says how the attempt ended (`AttemptEnd`), and the caller only does its own
bookkeeping (the action record, the step, the compensation row) and asks Celery to retry when told to.
What goes to the dead letters is decided in one place too: the rule in workers.status, applied by the
store whenever a failure is recorded (workers.status.is_dead_lettered).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from executors.base import Effect
from executors.errors import ExecutorError, RateLimitedError, RetryableError
from workers.guards import Admission, Attempt, Guard, NotReplicated, Outcome, get_guard
from workers.observability import tracing
from workers.outages import REDIS, outage_of
from workers.redaction import redact
from workers.retry import backoff_delay
from workers.settings import get_settings
from workers.status import ErrorKind, Verdict
from workers.store.models import utcnow

log = logging.getLogger("opsq.action")


class Ending(StrEnum):
    SUCCEEDED = "succeeded"  # the platform was called now, and answered
    DONE = "done"  # it had been called before (a redelivery): the stored result
    FAILED = "failed"  # failed for good, now or before (`already`)
    RETRY = "retry"  # failed, worth another attempt after `delay_s`
    WAIT = "wait"  # not admitted (breaker, rate limit, running elsewhere): again after `delay_s`, same attempt
    CANCELLED = "cancelled"  # cancelled (workers.cancel): not called, and never will be
    EXPIRED = "expired"  # its deadline passed before it was admitted: not called


@dataclass(frozen=True)
class AttemptEnd:
    ending: Ending
    result: dict[str, Any] | None = None
    kind: str | None = None
    message: str = ""
    delay_s: float = 0.0
    started_at: datetime | None = None
    #: The outcome was already in Redis (an earlier attempt's); this attempt called nothing.
    already: bool = False
    #: An earlier attempt's answer was lost and its effect was found on the platform: not called again.
    reconciled: bool = False
    #: The platform answered but Redis could not be told (away for longer than SETTLE_PATIENCE_S), or no
    #: replica confirmed it (OPSQ_REDIS_REPLICA_ACKS): the database is the only sure record of the outcome,
    #: so the caller writes it there at once.
    unsettled: bool = False
    verdict: str = Verdict.RUN
    #: A bug in the executor (any exception that is not an ExecutorError): the caller's failure line logs its
    #: traceback and the failure it raises is chained to it (`from crash`), so Sentry shows where it happened.
    crash: Exception | None = dataclasses.field(default=None, compare=False)


Call = Callable[[Effect], dict[str, Any]]
Find = Callable[[Effect], dict[str, Any] | None]


def run_attempt(ctx: Attempt, call: Call, *, max_attempts: int, find: Find | None = None,
                on_admitted: Callable[[], None] | None = None, log_extra: Mapping[str, Any] | None = None,
                what: str = "action") -> AttemptEnd:
    """One guarded attempt, in its own span when tracing is on (OPSQ_TRACING): the platform's HTTP calls are
    its children. See `_run_attempt`."""
    with tracing.span("opsq.attempt", {"opsq.platform": ctx.platform, "opsq.action": ctx.action,
                                       "opsq.action_id": ctx.action_id, "opsq.attempt": ctx.attempt,
                                       "opsq.role": ctx.role}) as span:
        end = _run_attempt(ctx, call, max_attempts=max_attempts, find=find, on_admitted=on_admitted,
                           log_extra=log_extra, what=what)
        if span is not None:
            span.set_attribute("opsq.outcome", end.ending.value)
            if end.kind:
                span.set_attribute("opsq.error_kind", end.kind)
            if end.verdict != Verdict.RUN:
                span.set_attribute("opsq.verdict", end.verdict)
        return end


def _run_attempt(ctx: Attempt, call: Call, *, max_attempts: int, find: Find | None,
                 on_admitted: Callable[[], None] | None, log_extra: Mapping[str, Any] | None,
                 what: str) -> AttemptEnd:
    """Runs `call` (the platform call) once, if the guards admit it, and settles its outcome in Redis.
    Never raises for a platform failure or an executor bug: both end as an AttemptEnd.

    `on_admitted` is the caller's bookkeeping between admission and the call (a compensation marks itself
    running): outside the settled part, so a database error there is not taken for the platform's failure;
    it propagates, and the lease runs out as for a worker that died. `log_extra` and `what` name the
    attempt in its log lines (a step's workflow_id and step_id; "compensation"). A crash of the executor is
    not logged here: it ends FAILED with the exception in `crash`, for the caller's one failure line.

    The effect key: `call` gets the action's Effect (executors.base) to carry to the platform. When the guards
    say an earlier attempt may have acted without its answer arriving (Admission.reconcile), `find` looks the
    effect up first: found, it is the result and nothing is called (`reconciled`); not found, or no way to
    look (`find` None or NotImplementedError: the action is at-least-once), the call is made. On the happy
    path nothing extra happens: the flag comes back with the admission, in the same round trip."""
    guard = get_guard()
    clock = _Clock()
    admission = guard.admit(ctx)
    if not admission.run:
        return _not_admitted(ctx, admission)
    if on_admitted is not None:
        on_admitted()
    started = utcnow()
    effect = Effect(key=ctx.effect_key or ctx.action_id, since=admission.since)
    extra = dict(log_extra or {"action_id": ctx.action_id, "platform": ctx.platform, "action": ctx.action,
                               "attempt": ctx.attempt})
    reconciled = False
    clock.call_started()
    try:
        try:
            with _time_limit(get_settings().lease_s):
                found = _look_up(find, effect, extra, what) if admission.reconcile else None
                if found is not None:
                    result, reconciled = redact(found), True
                else:
                    result = redact(call(effect))
        except (CallTimedOut, SoftTimeLimitExceeded):
            # A hung platform or executor: stopped once the call has run as long as its lease (past which another
            # worker may take the action over anyway). The request may have reached the platform, so the next
            # attempt looks the effect up first.
            raise RetryableError(f"the call ran past its time limit ({get_settings().lease_s:g}s) and was stopped",
                                 platform=ctx.platform, ambiguous=True) from None
    except RetryableError as exc:
        final = ctx.attempt >= max_attempts
        _settle_failure(guard, ctx, admission, exc, final=final, clock=clock)
        if final:
            return AttemptEnd(Ending.FAILED, kind=exc.kind, message=exc.message, started_at=started)
        settings = get_settings()
        delay = backoff_delay(ctx.attempt, base_s=settings.retry_base_s, cap_s=settings.retry_cap_s,
                              retry_after=exc.retry_after)
        if exc.ambiguous:
            # The platform may still be applying the call: give it time before the next attempt looks.
            delay = max(delay, settings.ambiguous_settle)
        return AttemptEnd(Ending.RETRY, kind=exc.kind, message=exc.message, delay_s=delay, started_at=started)
    except ExecutorError as exc:
        _settle_failure(guard, ctx, admission, exc, final=True, clock=clock)
        return AttemptEnd(Ending.FAILED, kind=exc.kind, message=exc.message, started_at=started)
    except Exception as exc:
        # A bug in an executor, not a platform failure: settle anyway (no probe slot or lease is left
        # behind), keep the message in the record. The caller's one failure line carries the traceback.
        msg = f"{type(exc).__name__}: {exc}"
        guard.settle(ctx, admission, clock.stamp(Outcome(ok=False, error_kind=ErrorKind.INTERNAL, error=msg,
                                                         final=True)))
        return AttemptEnd(Ending.FAILED, kind=ErrorKind.INTERNAL, message=msg, started_at=started, crash=exc)
    # Redis first: once the outcome is there, a redelivered message cannot call the platform again,
    # even if this process dies before the caller's database write. A Redis blip must not lose it
    # either: settle is retried (tenacity) for as long as a restart or failover takes.
    try:
        _settle_success(guard, ctx, admission, result, clock=clock, reconciled=reconciled)
    except SoftTimeLimitExceeded:
        # The time limit ran out while the settle waited for Redis (a call near its limit, then a blip): the call
        # happened, so its outcome goes to the database now, as when Redis stays away (below); the hard limit is
        # 15 s off, time enough for that write.
        log.error("%s succeeded but its time limit ran out before Redis had the outcome: writing it to the "
                  "database only", what,
                  extra=dict(log_extra or {"action_id": ctx.action_id, "platform": ctx.platform}))
        return AttemptEnd(Ending.SUCCEEDED, result=result, started_at=started, unsettled=True, reconciled=reconciled)
    except NotReplicated as exc:
        # The master has it, a failover may not: the database becomes its record now, not after write-behind.
        log.warning("%s succeeded; %s: writing its outcome to the database at once", what, exc,
                    extra=dict(log_extra or {"action_id": ctx.action_id, "platform": ctx.platform}))
        return AttemptEnd(Ending.SUCCEEDED, result=result, started_at=started, unsettled=True, reconciled=reconciled)
    except Exception as exc:
        if outage_of(exc) != REDIS:
            raise
        log.error("%s succeeded but Redis has been unreachable for %.0fs (%s): its outcome goes to the database "
                  "only", what, SETTLE_PATIENCE_S, exc,
                  extra=dict(log_extra or {"action_id": ctx.action_id, "platform": ctx.platform}))
        return AttemptEnd(Ending.SUCCEEDED, result=result, started_at=started, unsettled=True, reconciled=reconciled)
    return AttemptEnd(Ending.SUCCEEDED, result=result, started_at=started, reconciled=reconciled)


class CallTimedOut(Exception):
    """Raised in a platform call that outlived its time limit (_time_limit)."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Stops the platform call (and its lookup) once it has run `seconds`: SIGALRM raises CallTimedOut in it.

    Why our own and not Celery's soft_time_limit: Celery's limit is the whole task's (the settle's wait for a
    Redis blip included, where stopping would lose a success), and in this worker it did not fire for
    execute_action (tests/integration/test_flow_control.py found the call running on past it). A prefork pool
    process runs its task in its main thread, where a signal handler can raise; elsewhere (-P threads, solo
    in a thread) there is no such limit, only the HTTP timeouts."""
    if (seconds <= 0 or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CallTimedOut(f"ran past {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _look_up(find: Find | None, effect: Effect, extra: Mapping[str, Any], what: str) -> dict[str, Any] | None:
    """The effect of an earlier attempt whose answer was lost, or None (then the call is made). A failing lookup
    raises like a failing call: the attempt is retried, and looks again."""
    if find is None:
        log.warning("an earlier attempt of this %s may have acted (its answer was lost) and it cannot be looked "
                    "up: calling again (at-least-once)", what, extra=dict(extra))
        return None
    try:
        found = find(effect)
    except NotImplementedError:
        log.warning("an earlier attempt of this %s may have acted (its answer was lost) and this action cannot be "
                    "looked up: calling again (at-least-once)", what, extra=dict(extra))
        return None
    if found is None:
        log.info("an earlier attempt's answer was lost; its effect is not on the platform: calling",
                 extra=dict(extra))
    else:
        log.warning("reconciled: an earlier attempt's answer was lost and its effect exists; not calling again",
                    extra=dict(extra))
    return found


def _not_admitted(ctx: Attempt, admission: Admission) -> AttemptEnd:
    if admission.verdict == Verdict.DONE:
        return AttemptEnd(Ending.DONE, result=admission.result or {}, already=True, verdict=admission.verdict)
    if admission.verdict == Verdict.FAILED:
        # It failed for good earlier, but the worker died before recording it.
        error = admission.error or {}
        return AttemptEnd(Ending.FAILED, kind=str(error.get("kind")), message=str(error.get("message")),
                          already=True, verdict=admission.verdict)
    if admission.verdict == Verdict.CANCELLED:
        by = admission.error or {}
        note = f"cancelled by {by.get('by', 'someone')}" + (f": {by['why']}" if by.get("why") else "")
        if admission.reconcile:
            note += " (an earlier attempt's answer was lost: its effect may exist on the platform)"
        return AttemptEnd(Ending.CANCELLED, message=note, verdict=admission.verdict)
    if admission.verdict == Verdict.EXPIRED:
        return AttemptEnd(Ending.EXPIRED, message="its deadline passed before it started", verdict=admission.verdict)
    if admission.verdict == Verdict.OPEN_FAIL:
        return AttemptEnd(Ending.FAILED, kind=ErrorKind.CIRCUIT_OPEN,
                          message=f"circuit breaker for {ctx.platform} is open (fail-fast action)",
                          verdict=admission.verdict)
    # A wait: re-scheduled, not an attempt. Jitter keeps the waiting actions from returning all at once.
    wait = admission.wait_s + random.uniform(0, 0.25 * admission.wait_s + 0.05)
    return AttemptEnd(Ending.WAIT, delay_s=wait, verdict=admission.verdict)


SETTLE_PATIENCE_S = 30.0
_settle_retry = retry(stop=stop_after_delay(SETTLE_PATIENCE_S), wait=wait_exponential(multiplier=0.1, max=2.0),
                      retry=retry_if_exception(lambda exc: outage_of(exc) == REDIS), reraise=True)


class _Clock:
    """The attempt's durations for the metrics: from just before its admission, and the platform call's (its
    lookup included) from just before it. Read once, when the call ends: a settle retried through a Redis blip
    does not count the wait."""

    def __init__(self) -> None:
        self.admitted = time.perf_counter()
        self.calling: float | None = None
        self.ended: tuple[float | None, float] | None = None

    def call_started(self) -> None:
        self.calling = time.perf_counter()

    def stamp(self, outcome: Outcome) -> Outcome:
        """`outcome` with the durations."""
        if self.ended is None:
            now = time.perf_counter()
            self.ended = (None if self.calling is None else now - self.calling, now - self.admitted)
        return dataclasses.replace(outcome, call_s=self.ended[0], attempt_s=self.ended[1])


@_settle_retry
def _settle_success(guard: Guard, ctx: Attempt, admission: Admission, result: dict[str, Any], *, clock: _Clock,
                    reconciled: bool) -> None:
    guard.settle(ctx, admission, clock.stamp(Outcome(ok=True, result=result, reconciled=reconciled)))


def pause_of(exc: ExecutorError) -> float | None:
    """How long the platform asked the whole fleet to stop, after a 429 (or Google's rateLimitExceeded): its
    Retry-After, else OPSQ_RATE_LIMIT_PAUSE_S; capped like a retry's wait (OPSQ_RETRY_CAP_S), so a wild
    Retry-After cannot stall a key for a day. None for any other failure."""
    if not isinstance(exc, RateLimitedError):
        return None
    settings = get_settings()
    pause = exc.retry_after if exc.retry_after is not None else settings.rate_limit_pause_s
    return min(pause, settings.retry_cap_s) or None


@_settle_retry
def _settle_failure(guard: Guard, ctx: Attempt, admission: Admission, exc: ExecutorError, *, final: bool,
                    clock: _Clock) -> None:
    guard.settle(ctx, admission, clock.stamp(Outcome(ok=False, error_kind=exc.kind, error=exc.message,
                                                     health_failure=exc.health_failure, final=final,
                                                     ambiguous=bool(getattr(exc, "ambiguous", False)),
                                                     pause_s=pause_of(exc))))
