"""workers.attempt: the one guarded attempt (admit -> call -> classify -> settle -> retry decision) and
the one dead-letter policy. The guard is a recording fake (the Redis guard has its own tests in
tests/integration/test_guard_scripts.py): what is tested here is the sequence and the verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from tenacity import stop_after_attempt

from executors.base import Effect
from executors.errors import (
    AuthError,
    ExecutorError,
    InvalidParams,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from workers import attempt as attempt_mod
from workers.attempt import AttemptEnd, Ending, run_attempt
from workers.guards import Admission, Attempt, Outcome
from workers.redaction import REDACTED
from workers.settings import reload_settings
from workers.status import ErrorKind, Verdict


@dataclass
class FakeGuard:
    admission: Admission = field(default_factory=Admission)
    settle_errors: list[Exception] = field(default_factory=list)  # raised by the next settles, in order
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def admit(self, ctx: Attempt) -> Admission:
        self.calls.append(("admit", ctx))
        return self.admission

    def settle(self, ctx: Attempt, admission: Admission, outcome: Outcome) -> str:
        self.calls.append(("settle", outcome))
        assert admission is self.admission  # settled with what admitted it (its probe slot, its lease)
        if self.settle_errors:
            raise self.settle_errors.pop(0)
        return "closed"

    @property
    def settled(self) -> list[Outcome]:
        return [o for name, o in self.calls if name == "settle"]


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> FakeGuard:
    fake = FakeGuard()
    monkeypatch.setattr(attempt_mod, "get_guard", lambda: fake)
    monkeypatch.setenv("OPSQ_RETRY_BASE_S", "0.5")
    monkeypatch.setenv("OPSQ_RETRY_CAP_S", "30")
    reload_settings()
    return fake


def ctx(n: int = 1, **kw: Any) -> Attempt:
    return Attempt(action_id="a1", platform="trello", action="create_card", attempt=n, **kw)


class Call:
    """The platform call: returns `result` or raises `error`, and counts how often it ran."""

    def __init__(self, result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.count = result or {"ok": True}, error, 0

    def __call__(self, effect: Effect | None = None) -> dict[str, Any]:
        self.count += 1
        self.effect = effect
        if self.error is not None:
            raise self.error
        return self.result


# -- admitted: the call runs and its outcome is settled ---------------------------------------------------


def test_success_is_settled_ok_with_the_redacted_result(guard):
    call = Call({"card_id": "c1", "token": "t0ps3cret"})
    end = run_attempt(ctx(), call, max_attempts=3)
    assert (end.ending, end.result, end.kind, end.already) == (Ending.SUCCEEDED, {"card_id": "c1", "token": REDACTED},
                                                              None, False)
    assert end.started_at is not None and end.started_at.tzinfo is not None and end.verdict == Verdict.RUN
    assert call.count == 1
    assert [name for name, _ in guard.calls] == ["admit", "settle"]
    assert guard.settled == [Outcome(ok=True, result={"card_id": "c1", "token": REDACTED})]


def test_a_success_whose_settle_meets_a_redis_blip_is_settled_again(guard):
    guard.settle_errors = [redis.ConnectionError("blip"), redis.ConnectionError("blip")]
    end = run_attempt(ctx(), Call({"ok": 1}), max_attempts=3)
    assert end.ending == Ending.SUCCEEDED and not end.unsettled
    assert len(guard.settled) == 3  # two failed settles, then the one that stuck


def test_a_success_redis_never_hears_of_is_handed_to_the_database(guard, monkeypatch):
    # Redis away for longer than the settle's patience: the call happened, so the outcome must not be lost
    # (and the message must not be run again): the caller is told to write it to the database itself.
    monkeypatch.setattr(attempt_mod._settle_success.retry, "stop", stop_after_attempt(3))
    guard.settle_errors = [redis.ConnectionError("down")] * 3
    call = Call({"ok": 1})
    end = run_attempt(ctx(), call, max_attempts=3)
    assert (end.ending, end.result, end.unsettled, call.count) == (Ending.SUCCEEDED, {"ok": 1}, True, 1)


def test_a_settle_that_fails_for_another_reason_is_not_retried(guard):
    guard.settle_errors = [redis.ResponseError("NOSCRIPT")]
    with pytest.raises(redis.ResponseError):
        run_attempt(ctx(), Call({"ok": 1}), max_attempts=3)
    assert len(guard.settled) == 1


def test_a_retryable_failure_asks_for_a_retry_after_a_backoff(guard):
    end = run_attempt(ctx(1), Call(error=RetryableError("502 from trello", status=502)), max_attempts=3)
    assert (end.ending, end.kind, end.message) == (Ending.RETRY, "retryable", "502 from trello")
    assert 0 <= end.delay_s <= 0.5  # attempt 1: full jitter up to the base
    assert guard.settled == [Outcome(ok=False, error_kind="retryable", error="502 from trello", health_failure=True,
                                     final=False)]


def test_retry_after_is_honoured_in_the_delay(guard):
    end = run_attempt(ctx(2), Call(error=RateLimitedError("429", status=429, retry_after=7)), max_attempts=5)
    assert (end.ending, end.kind, end.delay_s) == (Ending.RETRY, "rate_limited", 7.0)
    (outcome,) = guard.settled
    assert outcome.health_failure is False and outcome.final is False  # the platform is healthy, only busy


def test_a_retryable_failure_at_the_last_attempt_fails_and_is_settled_final(guard):
    ends = [run_attempt(ctx(n), Call(error=RetryableError("timeout")), max_attempts=3) for n in (1, 2, 3)]
    assert [e.ending for e in ends] == [Ending.RETRY, Ending.RETRY, Ending.FAILED]
    assert (ends[-1].kind, ends[-1].message, ends[-1].delay_s) == ("retryable", "timeout", 0.0)
    assert [o.final for o in guard.settled] == [False, False, True]


@pytest.mark.parametrize(("error", "kind", "health_failure"), [
    (PermanentError("404 no such list", status=404), "permanent", False),
    (InvalidParams("name: Field required"), "invalid_params", False),
    (AuthError("401 invalid token", status=401), "auth", False),
    (ExecutorError("odd"), "error", False),
])
def test_other_executor_errors_fail_at_once_and_are_settled_final(guard, error, kind, health_failure):
    call = Call(error=error)
    end = run_attempt(ctx(1), call, max_attempts=5)
    assert (end.ending, end.kind, end.message, end.delay_s) == (Ending.FAILED, kind, error.message, 0.0)
    assert end.started_at is not None and call.count == 1
    assert guard.settled == [Outcome(ok=False, error_kind=kind, error=error.message, health_failure=health_failure,
                                     final=True)]


def test_an_executor_bug_fails_as_internal_and_is_still_settled(guard, caplog):
    bug = KeyError("card")
    end = run_attempt(ctx(1), Call(error=bug), max_attempts=5)
    assert (end.ending, end.kind, end.message) == (Ending.FAILED, ErrorKind.INTERNAL, "KeyError: 'card'")
    # Settled anyway: no probe slot or lease is left behind.
    assert guard.settled == [Outcome(ok=False, error_kind="internal", error="KeyError: 'card'", final=True)]
    # The exception goes to the caller, for its one failure line (with the traceback) and the failure's cause;
    # nothing is logged here (it would be a second ERROR line for the same failure).
    assert end.crash is bug and bug.__traceback__ is not None
    assert [r for r in caplog.records if r.name == "opsq.action"] == []


def test_run_attempt_never_raises_for_a_failure(guard):
    for error in (RetryableError("x"), PermanentError("x"), RuntimeError("x"), ZeroDivisionError()):
        assert isinstance(run_attempt(ctx(1), Call(error=error), max_attempts=2), AttemptEnd)


# -- not admitted: nothing is called, nothing is settled ---------------------------------------------------


def test_done_returns_the_stored_result_without_calling(guard):
    guard.admission = Admission(verdict="done", result={"card_id": "c1"})
    call = Call()
    end = run_attempt(ctx(2), call, max_attempts=3)
    assert end == AttemptEnd(Ending.DONE, result={"card_id": "c1"}, already=True, verdict=Verdict.DONE)
    assert call.count == 0 and guard.settled == []


def test_failed_before_returns_the_stored_error_without_calling(guard):
    guard.admission = Admission(verdict="failed", error={"kind": "auth", "message": "401 invalid token"})
    call = Call()
    end = run_attempt(ctx(2), call, max_attempts=3)
    assert end == AttemptEnd(Ending.FAILED, kind="auth", message="401 invalid token", already=True,
                             verdict=Verdict.FAILED)
    assert call.count == 0 and guard.settled == []


def test_fail_fast_on_an_open_breaker_fails_as_circuit_open(guard):
    guard.admission = Admission(verdict="open_fail", wait_s=12)
    call = Call()
    end = run_attempt(ctx(1, fail_fast=True), call, max_attempts=3)
    assert (end.ending, end.kind, end.already, end.verdict) == (Ending.FAILED, "circuit_open", False, "open_fail")
    assert end.message == "circuit breaker for trello is open (fail-fast action)"
    assert call.count == 0 and guard.settled == []


@pytest.mark.parametrize("verdict", ["busy", "open", "half_open_busy", "rate_limited"])
def test_a_wait_is_rescheduled_after_the_guards_wait_with_some_jitter(guard, verdict):
    guard.admission = Admission(verdict=verdict, wait_s=4.0)
    call = Call()
    delays = []
    for _ in range(50):
        end = run_attempt(ctx(1), call, max_attempts=3)
        assert (end.ending, end.verdict, end.kind, end.started_at) == (Ending.WAIT, verdict, None, None)
        delays.append(end.delay_s)
    assert all(4.0 <= d <= 4.0 + 0.25 * 4.0 + 0.05 for d in delays)
    assert len(set(delays)) > 1  # jittered: the waiting actions do not all come back at once
    assert call.count == 0 and guard.settled == []


# -- the dead-letter policy ---------------------------------------------------------------------------------


# -- the effect key: an earlier attempt's answer was lost --------------------------------------------------


def test_the_call_carries_the_effect_key_the_idempotency_key_first(guard):
    call = Call()
    run_attempt(ctx(), call, max_attempts=3)
    assert call.effect == Effect(key="a1", since=None)
    run_attempt(ctx(effect_key="order-42"), call, max_attempts=3)
    assert call.effect.key == "order-42"


def test_no_lookup_on_the_happy_path(guard):
    lookups: list[Effect] = []
    end = run_attempt(ctx(), Call(), max_attempts=3, find=lambda e: lookups.append(e) or None)
    assert end.ending == Ending.SUCCEEDED and not end.reconciled and lookups == []


def test_an_effect_found_after_a_lost_answer_is_the_result_and_nothing_is_called(guard):
    guard.admission = Admission(reconcile=True, since=1700000000.0)
    call, lookups = Call(), []

    def find(effect: Effect) -> dict[str, Any]:
        lookups.append(effect)
        return {"ts": "1.2", "token": "xoxb-secret-in-result"}

    end = run_attempt(ctx(), call, max_attempts=3, find=find)
    assert (end.ending, end.reconciled, call.count) == (Ending.SUCCEEDED, True, 0)
    assert lookups == [Effect(key="a1", since=1700000000.0)]
    assert end.result == {"ts": "1.2", "token": REDACTED}  # redacted like any result
    assert guard.settled == [Outcome(ok=True, result=end.result, reconciled=True)]  # counted as reconciled


def test_an_effect_not_found_is_made(guard):
    guard.admission = Admission(reconcile=True, since=1.0)
    call = Call({"ok": 2})
    end = run_attempt(ctx(), call, max_attempts=3, find=lambda e: None)
    assert (end.ending, end.reconciled, end.result, call.count) == (Ending.SUCCEEDED, False, {"ok": 2}, 1)


@pytest.mark.parametrize("find", [None, "not implemented"])
def test_an_action_that_cannot_be_looked_up_is_called_again_at_least_once(guard, find):
    guard.admission = Admission(reconcile=True, since=1.0)

    def cannot(effect: Effect) -> dict[str, Any] | None:
        raise NotImplementedError

    call = Call()
    end = run_attempt(ctx(), call, max_attempts=3, find=cannot if find else None)
    assert (end.ending, end.reconciled, call.count) == (Ending.SUCCEEDED, False, 1)


def test_a_lookup_that_fails_is_retried_like_a_call(guard):
    guard.admission = Admission(reconcile=True, since=1.0)

    def find(effect: Effect) -> dict[str, Any] | None:
        raise RetryableError("lookup timed out", ambiguous=False)

    call = Call()
    end = run_attempt(ctx(1), call, max_attempts=3, find=find)
    assert (end.ending, call.count) == (Ending.RETRY, 0)


def test_an_ambiguous_failure_is_settled_as_ambiguous_and_retried_after_the_settle_time(guard, monkeypatch):
    monkeypatch.setenv("OPSQ_AMBIGUOUS_SETTLE_S", "7")
    reload_settings()
    end = run_attempt(ctx(1), Call(error=RetryableError("read timed out", ambiguous=True)), max_attempts=3)
    assert end.ending == Ending.RETRY and end.delay_s >= 7  # the platform may still be applying it
    plain = run_attempt(ctx(1), Call(error=RetryableError("503")), max_attempts=3)
    assert plain.delay_s <= 0.5  # only the backoff
    assert guard.settled[0].ambiguous is True
    assert guard.settled[1].ambiguous is False
