"""Redis lost under load (issue 10, broker loss): a Redis the test owns is SIGKILLed while workers and beat run
and comes back, from its AOF or empty. Every worker and beat survive and reconnect by themselves; every action
whose submit returned completes, each platform call exactly once."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from tests.support.redis_server import OwnedRedis, client_uses
from tests.support.wait import wait_for
from tests.support.worker import start_beat
from workers.client import ActionHandle, submit_action
from workers.status import ActionStatus

pytestmark = pytest.mark.integration

N_ACTIONS = 120


@pytest.fixture
def owned_redis(tmp_path: Path):
    server = OwnedRedis(tmp_path / "redis", aof=True).start()
    yield server
    server.stop()


def _calls_per_text(sandbox_client) -> collections.Counter[str]:
    return collections.Counter(r["body"]["text"] for r in sandbox_client.requests(platform="slack")
                               if isinstance(r.get("body"), dict) and "text" in r["body"])


@pytest.mark.parametrize("empty", [False, True], ids=["from-aof", "empty"])
def test_workers_and_beat_survive_a_redis_restart_under_load(owned_redis, empty, opsq_env_sqlite,
                                                             workers_started, sandbox_client, tmp_path):
    env = opsq_env_sqlite(OPSQ_REDIS_URL=owned_redis.url(), OPSQ_STUCK_AFTER_S="5",
                          OPSQ_BEAT_INTERVALS='{"detect_stuck": 2}',
                          OPSQ_RATE_LIMITS='{"slack": {"rate": 0}}')
    with client_uses(owned_redis.url()):
        _drill(owned_redis, empty, env, workers_started, sandbox_client, tmp_path)


def _drill(owned_redis: OwnedRedis, empty: bool, env: dict[str, str], workers_started, sandbox_client,
           tmp_path: Path) -> None:
    sandbox_client.fault("slack", mode="ok", latency_ms=150)
    workers = [workers_started(env, queues="slack,maintenance", concurrency=2) for _ in range(2)]
    beat = start_beat(env, tmp_path / "beat.log")
    try:
        wait_for(lambda: b"now the leader" in (tmp_path / "beat.log").read_bytes(), timeout=20, what="beat leading")
        ids = [submit_action("slack", "send_message", {"channel": "#drill", "text": f"m{i}"}).id
               for i in range(N_ACTIONS)]
        # Under load: some done, some running, most still queued.
        wait_for(lambda: len(sandbox_client.requests(platform="slack")) >= N_ACTIONS // 4, timeout=30,
                 what="a quarter of the actions called")
        owned_redis.kill()
        time.sleep(3)
        owned_redis.restart(empty=empty)
        try:
            wait_for(lambda: all(ActionHandle(i).status().status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED)
                                 for i in ids), timeout=60, what="every submitted action final", interval=1)
        except AssertionError:
            states = collections.Counter(ActionHandle(i).status().status for i in ids)
            alive = [w.proc.poll() for w in workers]
            raise AssertionError(f"{states}; workers exit codes {alive}; beat {beat.poll()}\n"
                                 + "\n---\n".join(w.log()[-2500:] for w in workers)
                                 + (tmp_path / "beat.log").read_text()[-2500:]) from None
        assert {ActionHandle(i).status().status for i in ids} == {ActionStatus.SUCCEEDED}
        calls = _calls_per_text(sandbox_client)
        assert sorted(calls) == sorted(f"m{i}" for i in range(N_ACTIONS))
        assert [t for t, n in calls.items() if n > 1] == []  # no platform call twice
        for w in workers:
            assert w.proc is not None and w.proc.poll() is None, w.log()
            assert "Unrecoverable error" not in w.log()
        assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
    finally:
        beat.terminate()
        beat.wait(15)
