"""Drill: `opsq action cancel` while Redis is down (a Redis the test owns). The cancel is one clear error line
and changes nothing (no status, no audit entry, no mark); once Redis is back the same command works, and the
action never calls its platform, whether it was waiting in its queue or scheduled for later."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.redis_server import OwnedRedis, client_uses
from tests.support.wait import wait_for
from workers import scheduling
from workers.client import submit_action
from workers.guards import keys
from workers.status import ActionStatus
from workers.store import actions as store
from workers.store import audit
from workers.store.models import as_utc, utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def owned_redis(tmp_path: Path):
    server = OwnedRedis(tmp_path / "redis", aof=True).start()  # the queued message survives its restart
    yield server
    server.stop()


def _cancels(action_id: str) -> list[dict]:
    return [e for e in audit.entries(action="action_cancel", limit=1000) if e["target"] == f"action:{action_id}"]


def test_a_cancel_while_redis_is_down_changes_nothing_and_works_once_it_is_back(owned_redis, opsq_env_sqlite,
                                                                                  workers_started, sandbox_client,
                                                                                  tmp_path):
    env = opsq_env_sqlite(OPSQ_REDIS_URL=owned_redis.url())
    with client_uses(owned_redis.url()):
        # No worker yet: one waits in its queue; the other is a row due in 4 s (beat sends it, see below).
        queued = submit_action("slack", "send_message", {"channel": "#drill", "text": "queued"})
        scheduled = submit_action("slack", "send_message", {"channel": "#drill", "text": "scheduled"}, countdown=4)
        assert store.get(queued.id).status == ActionStatus.QUEUED
        assert store.get(scheduled.id).status == ActionStatus.SCHEDULED

        owned_redis.kill()
        for handle, before in ((queued, ActionStatus.QUEUED), (scheduled, ActionStatus.SCHEDULED)):
            out = opsq(env, "action", "cancel", handle.id, "--why", "drill")
            assert out.returncode == 1, out.stdout + out.stderr
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
            assert "Redis" in lines[0] and str(owned_redis.port) in lines[0], lines[0]
            assert out.stdout == ""
            # Nothing half-done: the record and the audit trail are as they were.
            assert store.get(handle.id).status == before
            assert _cancels(handle.id) == []

        owned_redis.start()  # from its AOF: the queued message is still in its queue
        r = owned_redis.client()
        assert r.get(keys.cancel(queued.id)) is None and r.get(keys.cancel(scheduled.id)) is None
        for handle in (queued, scheduled):
            out = opsq(env, "action", "cancel", handle.id, "--why", "drill")
            assert out.returncode == 0, out.stdout + out.stderr
            assert "cancelled" in out.stdout
            assert store.get(handle.id).status == ActionStatus.CANCELLED
            assert len(_cancels(handle.id)) == 1

        # Past the scheduled one's time, the release (beat's, run here) sends nothing: it is no longer scheduled.
        due = as_utc(store.get(scheduled.id).scheduled_for)
        wait_for(lambda: utcnow() > due, 10, "the scheduled action's time")
        assert scheduling.release_due() == []
        # A worker (one process: its queue's messages in order) takes the queued message, then a sentinel sent
        # after it: the sentinel ran, so the cancelled one had its turn, and did not call the platform.
        workers_started(env, queues="slack", concurrency=1)
        sentinel = submit_action("slack", "send_message", {"channel": "#drill", "text": "sentinel"})
        assert sentinel.wait(60).status == ActionStatus.SUCCEEDED
        assert [r["body"]["text"] for r in sandbox_client.requests(platform="slack")
                if isinstance(r.get("body"), dict)] == ["sentinel"]
        for handle in (queued, scheduled):
            assert store.get(handle.id).status == ActionStatus.CANCELLED
