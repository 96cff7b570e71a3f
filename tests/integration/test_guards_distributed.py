"""The guards with real worker processes: nothing runs twice, an outage is not hammered, the fleet
keeps to a platform's rate limit."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import redis
from sqlalchemy import func, select

from tests.support.wait import wait_for
from workers.client import ActionHandle, submit_action
from workers.guards import breaker as breaker_ops
from workers.guards import keys
from workers.store import actions as store
from workers.store.db import session
from workers.store.models import ActionRun

pytestmark = pytest.mark.integration


def run_state(redis_client, action_id: str) -> str | None:
    state = redis_client.hget(keys.run(action_id), "state")
    return state.decode() if state else None


def test_duplicate_storm_one_key_one_call(opsq_env, workers_started, sandbox_client):
    workers_started(opsq_env())
    params = {"database_id": "db1", "title": "exactly once"}

    def submit(_: int) -> str:
        return submit_action("notion", "create_task", params, idempotency_key="order-42").id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(200)))
    assert len(set(ids)) == 1
    view = ActionHandle(ids[0]).wait(30)
    assert view.status == "succeeded"
    time.sleep(0.5)  # room for any stray duplicate to arrive
    assert len(sandbox_client.requests(platform="notion")) == 1
    with session() as s:
        assert s.scalar(select(func.count()).select_from(ActionRun)) == 1


def test_dedupe_derives_the_key_from_the_content(opsq_env_sqlite, sandbox_client):
    a = submit_action("slack", "send_message", {"channel": "#a", "text": "same"}, dedupe=True)
    b = submit_action("slack", "send_message", {"text": "same", "channel": "#a"}, dedupe=True)
    c = submit_action("slack", "send_message", {"channel": "#a", "text": "different"}, dedupe=True)
    assert a.id == b.id and b.deduplicated and not a.deduplicated
    assert c.id != a.id


def test_redelivery_after_the_call_does_not_call_again(opsq_env_sqlite, workers_started, sandbox_client,
                                                       redis_client):
    env = opsq_env_sqlite(OPSQ_VISIBILITY_TIMEOUT_S="3")
    slow_ack = workers_started({**env, "OPSQ_TEST_PAUSE_AFTER_TASK_S": "60"}, queues="trello", concurrency=1,
                               app="tests.support.fault_app")
    handle = submit_action("trello", "create_card", {"list_id": "l1", "name": "only once"})
    wait_for(lambda: run_state(redis_client, handle.id) == "done", 20, "the outcome to be recorded")
    assert redis_client.hlen("unacked") == 1  # called, recorded, not yet acknowledged
    slow_ack.kill()
    fresh = workers_started(env, queues="trello", concurrency=1)
    wait_for(lambda: "already done" in fresh.log(), 30, "the redelivered message to be processed")
    wait_for(lambda: redis_client.hlen("unacked") == 0, 10, "the redelivered message to be acknowledged")
    assert len(sandbox_client.requests(platform="trello")) == 1
    view = handle.status()
    assert view.status == "succeeded" and view.result and view.result["card_id"]
    assert len(sandbox_client.state(platform="trello")["cards"]) == 1


def test_crash_before_the_call_runs_once_after_the_lease(opsq_env_sqlite, workers_started, sandbox_client,
                                                        redis_client):
    env = opsq_env_sqlite(OPSQ_VISIBILITY_TIMEOUT_S="2", OPSQ_IDEMPOTENCY_LEASE_S="4", OPSQ_RETRY_CAP_S="1")
    paused = workers_started({**env, "OPSQ_TEST_PAUSE_BEFORE_CALL_S": "60"}, queues="gdrive", concurrency=1,
                             app="tests.support.fault_app")
    handle = submit_action("gdrive", "create_file", {"name": "crash.txt"})
    wait_for(lambda: run_state(redis_client, handle.id) == "running", 20, "the lease to be taken")
    lease_until = float(redis_client.hget(keys.run(handle.id), "lease_until"))
    assert handle.status().status == "running"
    paused.kill()
    assert sandbox_client.requests(platform="gdrive") == []
    workers_started(env, queues="gdrive", concurrency=1)
    view = handle.wait(40)
    assert view.status == "succeeded"
    requests = sandbox_client.requests(platform="gdrive")
    calls = [c for c in requests if c["method"] == "POST"]
    # The dead attempt's lease ran out while it was `running`: the next one looks the effect up first (issue
    # 11: a files.list by its key), finds nothing (it died before calling) and creates the file, once.
    lookups = [c for c in requests if c["method"] == "GET"]
    assert len(calls) == 1 and len(lookups) == 1 and lookups[0]["started"] <= calls[0]["started"]
    assert calls[0]["started"] >= lease_until - 0.05  # not before the dead worker's lease ran out


def test_breaker_keeps_an_outage_from_being_hammered(opsq_env_sqlite, workers_started, sandbox_client):
    threshold, half_open_max, processes = 3, 1, 4
    env = opsq_env_sqlite(
        OPSQ_BREAKERS='{"trello": {"failure_threshold": 3, "window_s": 30, "open_s": 1.5, "half_open_max": 1}}',
        OPSQ_MAX_ATTEMPTS="30", OPSQ_RETRY_BASE_S="0.05", OPSQ_RETRY_CAP_S="0.3")
    workers_started(env, concurrency=2)
    workers_started(env, concurrency=2)
    sandbox_client.fault("trello", "error", status=503)
    outage_start = time.time()
    cards = [submit_action("trello", "create_card", {"list_id": "l", "name": f"card {i}"}) for i in range(50)]
    files = [submit_action("gdrive", "create_file", {"name": f"f{i}"}) for i in range(20)]
    # Other platforms keep working while trello is down.
    for handle in files:
        assert handle.wait(30).status == "succeeded"
    files_done = time.time()
    wait_for(lambda: sum(1 for e in breaker_ops.history("trello") if e["to"] == "open") >= 3, 30,
             "three open cycles")
    sandbox_client.clear_faults("trello")
    recovered = time.time()
    assert files_done < recovered
    for handle in cards:
        view = handle.wait(60)
        assert view.status == "succeeded", view
    calls = [c for c in sandbox_client.requests(platform="trello") if outage_start <= c["started"] < recovered]
    opens = sorted(e["at"] for e in breaker_ops.history("trello") if e["to"] == "open" and e["at"] < recovered)
    # Each open cycle (from one opening to the next): at most threshold + half_open_max calls, plus the
    # calls already in flight when it opened (one per worker process).
    bounds = [outage_start, *opens[1:], recovered]
    for start, end in itertools.pairwise(bounds):
        in_cycle = [c for c in calls if start <= c["started"] < end]
        assert len(in_cycle) <= threshold + half_open_max + processes, (start, end, len(in_cycle))
    assert len(calls) <= len(bounds) * (threshold + half_open_max + processes)
    print(f"\noutage: {len(calls)} calls to trello over {len(bounds) - 1} open cycles")
    assert len(calls) < 50  # 50 actions, yet far fewer calls than actions reached the failing platform
    history = breaker_ops.history("trello")
    assert history[0]["to"] == "closed" and history[0]["reason"] == "probe succeeded"
    assert len(sandbox_client.state(platform="trello")["cards"]) == 50


def test_rate_limit_holds_across_worker_processes(opsq_env_sqlite, workers_started, sandbox_client, redis_client):
    rate, burst = 5.0, 5
    env = opsq_env_sqlite(OPSQ_RATE_LIMITS='{"notion": {"rate": 5, "burst": 5}}')
    workers_started(env, queues="notion", concurrency=3)
    handles = [submit_action("notion", "create_task", {"database_id": "d", "title": f"t{i}"}) for i in range(50)]
    for handle in handles:
        assert handle.wait(60).status == "succeeded"
    assert len(sandbox_client.requests(platform="notion")) == 50
    # What the fleet decides is when each call is admitted: the bucket in the admit script, on Redis' clock,
    # and each action's admission is in its execution record. When a call then reaches the platform depends on
    # the machine (a pool process' first call makes its HTTP client and connection first: up to 0.4 s later
    # under load), so arrival times would measure the machine, not the limit.
    times = sorted(float(redis_client.hget(keys.run(h.id), "started")) for h in handles)
    # In any window, the admissions: at most burst + rate x window (Redis time, written to the microsecond).
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i] + 1e-3), (i, j, times[j] - times[i])
    assert times[-1] - times[0] >= (50 - burst) / rate - 1e-3  # the limit really bit: 45 tokens take 9 s


def test_guard_round_trips_seen_by_redis_monitor(opsq_env_sqlite, workers_started, redis_client, redis_url):
    workers_started(opsq_env_sqlite(), queues="noop", concurrency=1)
    assert submit_action("noop", "noop", {}).wait(20).status == "succeeded"  # scripts loaded, pools warm
    seen: list[dict] = []
    stop = threading.Event()
    ready = threading.Event()

    def monitor() -> None:
        with redis.Redis.from_url(redis_url).monitor() as m:
            ready.set()
            while not stop.is_set():
                seen.append(m.next_command())

    t = threading.Thread(target=monitor, daemon=True)
    t.start()
    ready.wait(5)
    time.sleep(0.2)
    handle = submit_action("noop", "noop", {"echo": 1})
    assert handle.wait(20).status == "succeeded"
    time.sleep(0.5)
    stop.set()
    redis_client.ping()  # wakes the monitor so the thread can end
    t.join(5)
    run_key = keys.run(handle.id)
    # The worker's commands: this process (the waiter) reads the record too, on its own connections.
    ours = {str(c.laddr.port) for c in psutil.Process().net_connections(kind="tcp") if c.laddr}
    guard_calls = [c for c in seen if run_key in c["command"] and c.get("client_type") != "lua"
                   and c.get("client_port") not in ours]
    assert [c["command"].split()[0].upper() for c in guard_calls] == ["EVALSHA", "EVALSHA"], guard_calls
    assert store.get(handle.id).status == "succeeded"
