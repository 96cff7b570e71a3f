"""Drill: per-key limits (workers.guards.limits) when the Redis they live in restarts empty, under load.

Slack messages to two channels under a concurrency limit of 1 per channel, calls slow enough that leases are
held when Redis (the broker and the guards, a server the test owns, no AOF) is SIGKILLed and comes back with
nothing. Every worker and beat run on; every action ends succeeded with one platform call each; no lease is
left that would hold a channel (a lease lost with Redis is simply gone, one given back by a settle after the
restart removes nothing); the limit holds before the loss, and after it is exceeded by at most the calls that
were in flight (their leases were lost with Redis, so a new attempt on their channel is admitted beside them).
A channel paused by a 429 is paused in Redis only: emptied, the pause is forgotten and the channel is called at
once (the platform answers another 429 if it still wants a pause, which pauses it again)."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import OwnedRedis, client_uses
from tests.support.wait import wait_for
from tests.support.worker import start_beat, stop_beat
from workers.client import ActionHandle, submit_action
from workers.guards import ratelimit as rl
from workers.settings import reload_settings
from workers.status import ActionStatus

pytestmark = pytest.mark.integration

CHANNELS = ("CLOSSA01", "CLOSSB02")
PER_CHANNEL = 6


def _posts(sandbox_client: Any) -> list[dict[str, Any]]:
    return [r for r in sandbox_client.requests(platform="slack") if r["path"].endswith("/chat.postMessage")]


def _most_at_once(calls: list[dict[str, Any]]) -> int:
    """The most requests the sandbox held at once (from its own arrival and answer times)."""
    edges = sorted([(c["started"], 1) for c in calls] + [(c["finished"], -1) for c in calls])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def _live_leases(server: OwnedRedis) -> list[bytes]:
    r = server.client()
    now = float(r.time()[0])
    return [key for key in r.scan_iter("opsq:cc:slack:*") if r.zcount(key, now, "+inf")]


@pytest.fixture
def owned_redis(tmp_path: Path):
    server = OwnedRedis(tmp_path / "redis").start()  # no AOF: a restart comes back empty
    yield server
    server.stop()


def test_concurrency_leases_lost_with_redis_hold_nothing_and_nothing_runs_twice(owned_redis, opsq_env_sqlite,
                                                                                 workers_started, sandbox_client,
                                                                                 tmp_path):
    env = opsq_env_sqlite(OPSQ_REDIS_URL=owned_redis.url(), OPSQ_RATE_LIMITS='{"slack": {"rate": 0}}',
                          OPSQ_KEY_LIMITS='{"slack": {"channel": {"concurrency": 1}}}',
                          OPSQ_STUCK_AFTER_S="5", OPSQ_BEAT_INTERVALS='{"detect_stuck": 2}')
    with client_uses(owned_redis.url()):
        sandbox_client.fault("slack", mode="ok", latency_ms=700)
        workers = [workers_started(env, queues="slack,maintenance", concurrency=2) for _ in range(2)]
        beat_log = tmp_path / "beat.log"
        beat = start_beat(env, beat_log)
        try:
            wait_for(lambda: b"now the leader" in beat_log.read_bytes(), 20, "beat leading")
            handles = [submit_action("slack", "send_message", {"channel": channel, "text": f"{channel}-{i}"})
                       for i in range(PER_CHANNEL) for channel in CHANNELS]
            # Under way: calls answered, and both channels' leases held by calls in flight now.
            wait_for(lambda: len(_posts(sandbox_client)) >= 3 and len(_live_leases(owned_redis)) == 2, 30,
                     "calls under way on both channels")
            owned_redis.kill()
            killed_at = time.time()
            time.sleep(2)
            owned_redis.restart(empty=True)
            try:
                wait_for(lambda: all(ActionHandle(h.id).status().status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED)
                                     for h in handles), 90, "every action final", interval=1)
            except AssertionError:
                states = collections.Counter(ActionHandle(h.id).status().status for h in handles)
                raise AssertionError(f"{states}\n" + "\n---\n".join(w.log()[-2500:] for w in workers)
                                     + beat_log.read_text()[-2500:]) from None
            assert {ActionHandle(h.id).status().status for h in handles} == {ActionStatus.SUCCEEDED}
            calls = collections.Counter(r["body"]["text"] for r in _posts(sandbox_client) if r["status"] == 200)
            assert sorted(calls) == sorted(f"{c}-{i}" for i in range(PER_CHANNEL) for c in CHANNELS)
            assert [t for t, n in calls.items() if n > 1] == []  # no platform call twice
            assert _live_leases(owned_redis) == []  # nothing holds a channel any more
            for w in workers:
                assert w.proc is not None and w.proc.poll() is None, w.log()[-3000:]
            assert beat.poll() is None, beat_log.read_text()[-3000:]
        finally:
            stop_beat(beat)

    lost = 0
    for channel in CHANNELS:
        mine = [r for r in _posts(sandbox_client) if r["body"]["channel"] == channel]
        before = [r for r in mine if r["finished"] < killed_at]
        in_flight = [r for r in mine if r["started"] < killed_at <= r["finished"]]
        lost += len(in_flight)
        assert _most_at_once(before) <= 1, before  # the limit held while Redis had its leases
        # After the loss: at most the call in flight beside one new one, each lease lost with Redis.
        assert _most_at_once(mine) <= 1 + len(in_flight), mine
    print(f"\n{lost} call(s) in flight when Redis died; most at once per channel: "
          + ", ".join(str(_most_at_once([r for r in _posts(sandbox_client) if r["body"]["channel"] == c]))
                      for c in CHANNELS))


def test_a_pause_lost_with_redis_is_forgotten_and_its_channel_works_again(owned_redis, opsq_env_sqlite,
                                                                          workers_started, sandbox_client,
                                                                          monkeypatch):
    limits = '{"slack": {"channel": {"rate": "10/s", "burst": 5}}}'
    env = opsq_env_sqlite(OPSQ_REDIS_URL=owned_redis.url(), OPSQ_RATE_LIMITS='{"slack": {"rate": 0}}',
                          OPSQ_KEY_LIMITS=limits, OPSQ_RETRY_CAP_S="60")
    monkeypatch.setenv("OPSQ_KEY_LIMITS", limits)  # this process reads the status as the workers see it
    reload_settings()
    channel = CHANNELS[0]
    with client_uses(owned_redis.url()):
        workers_started(env, queues="slack", concurrency=2)
        # A 429 asking for 60 s: the channel is paused for every worker (the action itself fails: one attempt).
        sandbox_client.fault("slack", "rate_limit", retry_after=60, times=1)
        limited = submit_action("slack", "send_message", {"channel": channel, "text": "limited"}, max_attempts=1)
        assert limited.wait(30).status == ActionStatus.FAILED

        def paused() -> list[dict[str, Any]]:
            return [w for w in rl.status("slack")["waiting"] if w["state"] == "paused"]

        (pause,) = wait_for(paused, 10, "the channel paused")
        pause_ends = time.time() + pause["for_s"]

        owned_redis.kill()
        owned_redis.restart(empty=True)
        assert paused() == []  # the pause was in Redis only: forgotten
        after = submit_action("slack", "send_message", {"channel": channel, "text": "after"})
        assert after.wait(60).status == ActionStatus.SUCCEEDED
    (call,) = [r for r in _posts(sandbox_client) if r["body"]["text"] == "after"]
    assert call["started"] < pause_ends  # it did not wait out the lost pause
    assert [r["body"]["text"] for r in _posts(sandbox_client)] == ["limited", "after"]
