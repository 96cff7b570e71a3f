"""OPSQ_REDIS_REPLICA_ACKS (issue 10, Redis HA): the guards' records reach a replica before the platform is
called and before a success is acknowledged, or the attempt does not go ahead as if they had.

A master and a replica the test owns (real redis-server processes); the replica is stopped with SIGSTOP to
make it fall behind. The failover itself, under load, is tests/faults/test_sentinel_failover.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import OwnedRedis
from tests.support.wait import wait_for
from workers.attempt import Ending, run_attempt
from workers.guards import Attempt, NotReplicated, Outcome, keys, reset_guard
from workers.guards.redis_guard import RedisGuard
from workers.ops.health import FAIL, OK, replicas_check
from workers.settings import Settings, reload_settings
from workers.status import Verdict

pytestmark = pytest.mark.integration

TIMEOUT_MS = 300


class Pair:
    def __init__(self, directory: Path) -> None:
        self.master = OwnedRedis(directory / "master", "--repl-diskless-sync-delay", "0").start()
        self.replica = OwnedRedis(directory / "replica", "--replicaof", "127.0.0.1", str(self.master.port)).start()
        self.m, self.r = self.master.client(), self.replica.client()
        # Just after its first sync a replica acknowledges only on its once-a-second beat: wait for prompt acks.
        wait_for(self.acknowledges_a_write, timeout=20, what="the replica in sync and acknowledging")

    def acknowledges_a_write(self) -> bool:
        pipe = self.m.pipeline(transaction=False)
        pipe.set("opsq:test:probe", "1")
        pipe.execute_command("WAIT", 1, 100)
        return bool(pipe.execute()[1] == 1)

    def pause_replica(self) -> None:
        assert self.replica.proc is not None
        self.replica.proc.send_signal(19)  # SIGSTOP: connected, answering nothing (a replica that fell behind)

    def resume_replica(self) -> None:
        assert self.replica.proc is not None
        self.replica.proc.send_signal(18)  # SIGCONT

    def stop(self) -> None:
        self.resume_replica()
        self.replica.stop()
        self.master.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.stop()


def guard(pair: Pair, acks: int = 1) -> RedisGuard:
    settings = Settings(redis_replica_acks=acks, redis_replica_ack_timeout_ms=TIMEOUT_MS, idempotency_lease_s=30)
    return RedisGuard(settings, client=redis.Redis(host="127.0.0.1", port=pair.master.port))


def attempt(action_id: str) -> Attempt:
    return Attempt(action_id=action_id, platform="slack", action="send_message", attempt=1)


def test_a_claim_and_a_success_are_on_the_replica_when_the_guard_returns(pair):
    g = guard(pair)
    a = attempt("a1")
    admission = g.admit(a)
    assert admission.run
    # Read from the replica at once: WAIT returned only after it acknowledged the claim.
    assert pair.r.hget(keys.run("a1"), "state") == b"running"
    g.settle(a, admission, Outcome(ok=True, result={"ts": "1"}))
    assert pair.r.hget(keys.run("a1"), "state") == b"done"


def test_a_claim_no_replica_confirms_is_taken_back_and_nothing_is_called(pair):
    g = guard(pair)
    pair.pause_replica()
    started = time.monotonic()
    admission = g.admit(attempt("a2"))
    took = time.monotonic() - started
    assert admission.verdict == Verdict.UNREPLICATED and admission.wait_s >= 1.0
    assert took >= TIMEOUT_MS / 1000 * 0.9  # it did wait for the replica
    assert not pair.m.exists(keys.run("a2"))  # the claim is gone: the next delivery may run it
    pair.resume_replica()
    wait_for(lambda: guard(pair).admit(attempt("a2")).run, timeout=10, what="admitted once the replica is back")


def test_a_released_claim_keeps_what_the_next_attempt_must_know(pair):
    """An earlier attempt may have acted (its lease ran out while running): ADMIT marked the record ambiguous.
    Taking the new claim back must leave it so, or the next attempt would call without looking first."""
    g = guard(pair)
    pair.m.hset(keys.run("a3"), mapping={"state": "running", "owner": "dead-worker", "lease_until": "1",
                                         "first_started": "1"})
    pair.pause_replica()
    assert g.admit(attempt("a3")).verdict == Verdict.UNREPLICATED
    record = pair.m.hgetall(keys.run("a3"))
    assert record[b"state"] == b"ambiguous" and record[b"ambiguous"] == b"1" and b"owner" not in record
    pair.resume_replica()
    admission = guard(pair).admit(attempt("a3"))
    assert admission.run and admission.reconcile


def test_a_success_no_replica_confirms_raises(pair):
    g = guard(pair)
    a = attempt("a4")
    admission = g.admit(a)
    pair.pause_replica()
    with pytest.raises(NotReplicated):
        g.settle(a, admission, Outcome(ok=True, result={}))
    assert pair.m.hget(keys.run("a4"), "state") == b"done"  # the master has it; a failover might not
    # A failure waits for no replica (the claim is replicated; a final failure is in the database first).
    b = attempt("a5")
    pair.resume_replica()
    admission_b = g.admit(b)
    pair.pause_replica()
    started = time.monotonic()
    g.settle(b, admission_b, Outcome(ok=False, error_kind="retryable", error="503"))
    assert time.monotonic() - started < TIMEOUT_MS / 1000


def test_an_attempt_whose_success_is_not_replicated_ends_unsettled(pair, monkeypatch):
    """Through run_attempt, with the settings from the environment: the call happens, the replica stops
    during it, and the attempt ends `unsettled` (its caller writes the database at once)."""
    monkeypatch.setenv("OPSQ_REDIS_URL", pair.master.url())
    monkeypatch.setenv("OPSQ_REDIS_REPLICA_ACKS", "1")
    monkeypatch.setenv("OPSQ_REDIS_REPLICA_ACK_TIMEOUT_MS", str(TIMEOUT_MS))
    reload_settings()
    reset_guard()
    calls = []

    def call(effect):
        calls.append(effect.key)
        pair.pause_replica()
        return {"ok": True}

    try:
        end = run_attempt(attempt("a6"), call, max_attempts=3)
    finally:
        monkeypatch.undo()
        reload_settings()
        reset_guard()
    assert end.ending == Ending.SUCCEEDED and end.unsettled and calls == ["a6"]


def test_health_counts_the_replicas_that_keep_up(pair):
    info = pair.m.info("replication")
    assert replicas_check(info, 1).status == OK
    assert replicas_check(info, 2).status == FAIL
    pair.pause_replica()
    wait_for(lambda: int(next(v for k, v in pair.m.info("replication").items()
                              if k.startswith("slave") and isinstance(v, dict))["lag"]) > 1,
             timeout=10, what="the master seeing the replica's lag")
    check = replicas_check(pair.m.info("replication"), 1)
    assert check.status == FAIL and "0 of 1 replica(s)" in check.detail
