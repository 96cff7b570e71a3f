"""`opsq workers forget NODE` (issue 10): a worker's host is gone and the operator knows it; what that worker held
comes back now, not after its heartbeat runs out (here a long OPSQ_CONSUMER_TTL_S) nor after the visibility
timeout (an hour)."""

from __future__ import annotations

import json

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.wait import wait_for
from workers.client import submit_action
from workers.guards import keys

pytestmark = pytest.mark.integration


def test_forgetting_a_dead_worker_gives_back_what_it_held_at_once(opsq_env_sqlite, workers_started, sandbox_client,
                                                                  redis_client):
    env = opsq_env_sqlite(OPSQ_CONSUMER_TTL_S="120", OPSQ_IDEMPOTENCY_LEASE_S="4")
    doomed = workers_started({**env, "OPSQ_TEST_PAUSE_BEFORE_CALL_S": "60"}, queues="gdrive", concurrency=2,
                             app="tests.support.fault_app", name="doomed@deadhost")
    handles = [submit_action("gdrive", "create_file", {"name": f"forget-{i}.txt"}) for i in range(3)]
    # Two admitted and paused before their call (the third waits in the queue): held by the doomed worker.
    wait_for(lambda: sum(redis_client.hget(keys.run(h.id), "state") == b"running" for h in handles) == 2, 20,
             "two running")
    wait_for(lambda: redis_client.hlen("unacked") == 2, 20, "two messages held")
    listed = json.loads(opsq(env, "workers", "list", "--json").stdout)
    assert {c["node"] for c in listed if c["held"]} == {"doomed@deadhost"}
    doomed.kill()

    refused = opsq(env, "workers", "forget", "doomed@deadhost")
    assert refused.returncode != 0 and "alive" in refused.stderr and "Traceback" not in refused.stderr
    assert redis_client.hlen("unacked") == 2  # nothing given back by the refusal

    forgot = opsq(env, "workers", "forget", "doomed@deadhost", "--force", "--actor", "oncall")
    assert forgot.returncode == 0, forgot.stderr
    assert "gave back 2 message(s)" in forgot.stdout
    queued = sum(redis_client.llen(k) for k in redis_client.keys("gdrive*"))  # one list per priority step
    assert redis_client.hlen("unacked") == 0 and queued == 3

    workers_started(env, queues="gdrive", concurrency=1)
    views = [h.wait(60) for h in handles]
    assert [v.status for v in views] == ["succeeded"] * 3
    creates = [c for c in sandbox_client.requests(platform="gdrive") if c["method"] == "POST"]
    assert len(creates) == 3  # each once: the paused ones had not called yet (their redelivery looks first)
    assert all(c["node"] != "doomed@deadhost" for c in json.loads(opsq(env, "workers", "list", "--json").stdout))
    trail = json.loads(opsq(env, "audit", "list", "--action", "worker_forget", "--json").stdout)
    assert [(e["actor"], e["target"], e["detail"]["messages_given_back"]) for e in trail] == [
        ("oncall", "worker:doomed@deadhost", 2)]
