"""The guards' Lua scripts against a real Redis: transitions, atomic probe slots, bucket, leases,
and one round trip per side of a call."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from workers.guards import Admission, Attempt, Outcome
from workers.guards import breaker as breaker_ops
from workers.guards.redis_guard import RedisGuard
from workers.settings import BreakerConfig, RateLimitConfig, Settings

pytestmark = pytest.mark.integration


def make_guard(redis_client: redis.Redis, **kw) -> RedisGuard:
    settings = Settings(**{
        "breaker": BreakerConfig(failure_threshold=9, window_s=10),
        "breakers": {"trello": {"failure_threshold": 3, "open_s": 0.5, "half_open_max": 2}},
        "rate_limits": {"notion": RateLimitConfig(rate=5, burst=3)},
        "idempotency_lease_s": 0.5, **kw})
    return RedisGuard(settings, client=redis_client)


def attempt(action_id: str, platform: str = "trello", n: int = 1, **kw) -> Attempt:
    return Attempt(action_id=action_id, platform=platform, action="create_card", attempt=n, **kw)


FAIL_503 = Outcome(ok=False, error_kind="retryable", error="503", health_failure=True)


def test_breaker_opens_after_threshold_then_half_opens_and_a_probe_closes_it(redis_client):
    guard = make_guard(redis_client)
    for i in range(3):
        a = attempt(f"a{i}")
        adm = guard.admit(a)
        assert adm.run
        state = guard.settle(a, adm, FAIL_503)
    assert state == "open"
    blocked = guard.admit(attempt("b"))
    assert blocked.verdict == "open" and 0 < blocked.wait_s <= 0.5
    time.sleep(0.55)
    p1, p2, p3 = attempt("p1"), attempt("p2"), attempt("p3")
    adm1, adm2 = guard.admit(p1), guard.admit(p2)
    assert adm1.run and adm1.probe and adm2.run and adm2.probe
    assert guard.admit(p3).verdict == "half_open_busy"  # half_open_max = 2
    assert guard.settle(p1, adm1, Outcome(ok=True, result={"ok": 1})) == "closed"
    history = breaker_ops.history("trello", client=redis_client)
    assert [(h["from"], h["to"]) for h in reversed(history)] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert "3 failures within 10" in history[-1]["reason"]


def test_not_every_failure_counts_for_the_breaker(redis_client):
    guard = make_guard(redis_client)
    for i, outcome in enumerate([
        Outcome(ok=False, error_kind="permanent", error="400"),
        Outcome(ok=False, error_kind="auth", error="401"),
        Outcome(ok=False, error_kind="rate_limited", error="429"),
    ] * 3):
        a = attempt(f"x{i}")
        assert guard.settle(a, guard.admit(a), outcome) == "closed"


def test_a_failed_probe_reopens_the_breaker(redis_client):
    guard = make_guard(redis_client)
    breaker_ops.force_open("trello", "test", client=redis_client)
    assert guard.admit(attempt("q")).verdict == "open"  # forced: stays open past open_s
    time.sleep(0.55)
    assert guard.admit(attempt("q")).verdict == "open"
    breaker_ops.reset("trello", "test", "done", client=redis_client)
    for i in range(3):
        a = attempt(f"f{i}")
        guard.settle(a, guard.admit(a), FAIL_503)
    time.sleep(0.55)
    probe = attempt("probe")
    adm = guard.admit(probe)
    assert adm.probe
    assert guard.settle(probe, adm, FAIL_503) == "open"
    assert breaker_ops.history("trello", limit=1, client=redis_client)[0]["reason"].startswith("probe failed")


def test_probe_slots_are_atomic_across_concurrent_workers(redis_client, redis_url):
    guard = make_guard(redis_client)
    for i in range(3):
        a = attempt(f"o{i}")
        guard.settle(a, guard.admit(a), FAIL_503)
    time.sleep(0.55)
    verdicts: list[str] = []
    barrier = threading.Barrier(16)

    def race(i: int) -> None:
        g = RedisGuard(guard.settings, client=redis.Redis.from_url(redis_url))  # a connection of its own
        barrier.wait()
        verdicts.append(g.admit(attempt(f"r{i}")).verdict)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts.count("run") == 2 and verdicts.count("half_open_busy") == 14


def test_token_bucket_allows_burst_then_the_rate(redis_client):
    guard = make_guard(redis_client)
    verdicts = [guard.admit(attempt(f"n{i}", platform="notion")) for i in range(4)]
    assert [v.verdict for v in verdicts] == ["run", "run", "run", "rate_limited"]
    assert 0.15 < verdicts[3].wait_s <= 0.2
    time.sleep(verdicts[3].wait_s + 0.01)
    assert guard.admit(attempt("n9", platform="notion")).run


def test_execution_record_lease_done_and_failed(redis_client):
    guard = make_guard(redis_client)
    first = attempt("act")
    adm = guard.admit(first)
    assert adm.run
    second = attempt("act")  # the same action redelivered to another worker
    busy = guard.admit(second)
    assert busy.verdict == "busy" and 0 < busy.wait_s <= 0.5
    time.sleep(0.55)  # the first worker died: its lease runs out
    takeover = guard.admit(second)
    assert takeover.run
    guard.settle(second, takeover, Outcome(ok=True, result={"card_id": "c1"}))
    again = guard.admit(attempt("act"))
    assert again.verdict == "done" and again.result == {"card_id": "c1"}
    bad = attempt("bad")
    guard.settle(bad, guard.admit(bad), Outcome(ok=False, error_kind="permanent", error="400 nope", final=True))
    failed = guard.admit(attempt("bad"))
    assert failed.verdict == "failed" and failed.error == {"kind": "permanent", "message": "400 nope"}


def test_a_non_final_failure_frees_the_action_for_its_retry(redis_client):
    guard = make_guard(redis_client)
    a1 = attempt("retry-me", n=1)
    guard.settle(a1, guard.admit(a1), Outcome(ok=False, error_kind="permanent", error="x"))
    assert guard.admit(attempt("retry-me", n=2)).run


def test_the_happy_path_never_asks_to_reconcile(redis_client):
    guard = make_guard(redis_client)
    a1 = attempt("plain", n=1)
    adm = guard.admit(a1)
    assert adm.run and not adm.reconcile and adm.since is None
    guard.settle(a1, adm, Outcome(ok=False, error_kind="retryable", error="connect refused"))  # never sent
    a2 = attempt("plain", n=2)
    assert not guard.admit(a2).reconcile


def test_an_ambiguous_failure_makes_every_later_attempt_reconcile_from_the_first_start(redis_client):
    guard = make_guard(redis_client)
    a1 = attempt("lost-answer", n=1)
    adm1 = guard.admit(a1)
    first_started = float(redis_client.hget("opsq:run:lost-answer", "started"))
    guard.settle(a1, adm1, Outcome(ok=False, error_kind="retryable", error="read timed out", ambiguous=True))
    assert redis_client.hget("opsq:run:lost-answer", "state") == b"ambiguous"
    a2 = attempt("lost-answer", n=2)
    adm2 = guard.admit(a2)
    assert adm2.run and adm2.reconcile and adm2.since == pytest.approx(first_started)
    # A plain failure after an ambiguous one: the effect of the first may still exist, so it stays sticky.
    guard.settle(a2, adm2, Outcome(ok=False, error_kind="retryable", error="connect refused"))
    adm3 = guard.admit(attempt("lost-answer", n=3))
    assert adm3.reconcile and adm3.since == pytest.approx(first_started)


def test_a_lease_that_ran_out_while_running_makes_the_next_attempt_reconcile(redis_client):
    guard = make_guard(redis_client)
    guard.admit(attempt("died-mid-call"))  # its worker dies during the call: never settled
    time.sleep(0.55)
    takeover = guard.admit(attempt("died-mid-call"))
    assert takeover.run and takeover.reconcile


class CountingConnection(redis.Connection):
    sent = 0

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


def test_admit_and_settle_are_one_round_trip_each(redis_client):
    kw = redis_client.connection_pool.connection_kwargs
    pool = redis.ConnectionPool(connection_class=CountingConnection, host=kw.get("host"), port=kw.get("port"),
                                db=kw.get("db", 0))
    client = redis.Redis(connection_pool=pool)
    guard = make_guard(client)
    warm = attempt("warm", platform="notion")
    guard.settle(warm, guard.admit(warm), Outcome(ok=True, result={}))  # loads the scripts once
    CountingConnection.sent = 0
    a = attempt("counted", platform="notion")
    adm: Admission = guard.admit(a)
    assert CountingConnection.sent == 1
    guard.settle(a, adm, Outcome(ok=True, result={"page_id": "p"}))
    assert CountingConnection.sent == 2


def _open_trello(guard: RedisGuard) -> None:
    for i in range(3):
        a = attempt(f"open{i}")
        guard.settle(a, guard.admit(a), FAIL_503)


def test_a_probe_that_never_settles_frees_its_slot_after_its_lease(redis_client):
    guard = make_guard(redis_client)  # lease 0.5 s, trello: open_s 0.5, half_open_max 2
    _open_trello(guard)
    time.sleep(0.55)
    dead1, dead2 = attempt("dead1"), attempt("dead2")
    assert guard.admit(dead1).probe and guard.admit(dead2).probe  # then their workers are SIGKILLed
    assert guard.admit(attempt("waits")).verdict == "half_open_busy"
    assert breaker_ops.status("trello", client=redis_client).probes_in_flight == 2
    time.sleep(0.55)  # both leases run out; no settle ever comes
    assert breaker_ops.status("trello", client=redis_client).probes_in_flight == 0
    live = attempt("live")
    adm = guard.admit(live)
    assert adm.run and adm.probe
    assert breaker_ops.status("trello", client=redis_client).probes_in_flight == 1
    assert guard.settle(live, adm, Outcome(ok=True, result={})) == "closed"
    assert not redis_client.exists("opsq:cb:trello:probes")  # the transition cleared the probes


def test_a_settled_probe_gives_its_slot_back_at_once(redis_client):
    guard = make_guard(redis_client, breakers={"trello": {"failure_threshold": 3, "open_s": 0.5,
                                                          "half_open_max": 1}})
    _open_trello(guard)
    time.sleep(0.55)
    p1 = attempt("p1")
    adm = guard.admit(p1)
    assert adm.probe and guard.admit(attempt("p2")).verdict == "half_open_busy"
    # A probe whose failure does not count against the platform's health leaves the breaker half-open...
    assert guard.settle(p1, adm, Outcome(ok=False, error_kind="permanent", error="400")) == "half_open"
    # ...and its slot is free for the next probe without waiting for the lease.
    p2 = attempt("p2")
    adm2 = guard.admit(p2)
    assert adm2.run and adm2.probe


def test_operator_transitions_clear_the_probes(redis_client):
    guard = make_guard(redis_client)
    _open_trello(guard)
    time.sleep(0.55)
    assert guard.admit(attempt("x1")).probe and guard.admit(attempt("x2")).probe
    breaker_ops.force_open("trello", "test", client=redis_client, audited=False)
    assert not redis_client.exists("opsq:cb:trello:probes")
    assert breaker_ops.status("trello", client=redis_client).probes_in_flight == 0
    breaker_ops.reset("trello", "test", client=redis_client, audited=False)
    assert breaker_ops.status("trello", client=redis_client).state == "closed"
