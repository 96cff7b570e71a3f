"""Limits per key with real worker processes and the sandbox (issue 14): every assertion reads the sandbox's own
log (when each request arrived and was answered), not what the workers say they did.

- 3 workers x 2 processes, Slack messages to 3 channels at 1/s per channel: no channel above its rate in any
  window (+1 for arrival jitter), the three channels in parallel; then, on the same running fleet, a concurrency
  limit of 2 per channel (set at runtime) never exceeded;
- `opsq ratelimit set` on running workers: the limit holds from a second after the command returned, and
  `opsq ratelimit unset` lifts it as fast;
- a 429 with Retry-After 3 s on one worker: no worker calls that channel for 3 s, the other channel goes on.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import generate_latest

from tests.integration.opsq_cli import opsq
from workers.client import ActionHandle, submit_action, wait_all
from workers.guards import keys
from workers.guards import ratelimit as rl
from workers.observability import metrics
from workers.settings import reload_settings
from workers.store import audit

pytestmark = pytest.mark.integration

CHANNELS = ("CLIMITA01", "CLIMITB02", "CLIMITC03")


def posts(sandbox_client: Any, since: float = 0.0) -> list[dict[str, Any]]:
    return [r for r in sandbox_client.requests(platform="slack")
            if r["path"].endswith("/chat.postMessage") and r["started"] >= since]


def by_channel(requests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in requests:
        found[r["body"]["channel"]].append(r)
    for calls in found.values():
        calls.sort(key=lambda r: r["started"])
    return found


def assert_within_rate(times: list[float], rate: float, burst: int, what: str) -> None:
    """In any window [t_i, t_j] of arrivals: at most burst + rate x (t_j - t_i) calls, + 1 for the jitter between
    an admission (on Redis' clock) and its arrival at the platform."""
    for i, j in itertools.combinations(range(len(times)), 2):
        assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1, (what, i, j, times[j] - times[i])


def max_overlap(calls: list[dict[str, Any]]) -> int:
    """The most requests the sandbox was holding at once (from its arrival and answer times)."""
    edges = sorted([(c["started"], 1) for c in calls] + [(c["finished"], -1) for c in calls])
    most = current = 0
    for _, step in edges:  # at equal times an answer (-1) sorts before an arrival
        current += step
        most = max(most, current)
    return most


def start_fleet(workers_started: Any, env: dict[str, str], n: int, concurrency: int) -> None:
    """`n` Slack workers, started side by side (each waits for its own `ready`)."""
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: workers_started(env, queues="slack", concurrency=concurrency), range(n)))


def succeeded(handles: list[ActionHandle], timeout: float) -> None:
    wait_all(handles, timeout=timeout)
    assert {h.status().status for h in handles} == {"succeeded"}


def test_per_key_rate_and_concurrency_across_worker_processes(opsq_env_sqlite, workers_started, sandbox_client,
                                                              redis_client):
    env = opsq_env_sqlite(OPSQ_RATE_LIMITS='{"slack": {"rate": 0}}',
                          OPSQ_KEY_LIMITS='{"slack": {"channel": {"rate": "1/s"}}}')
    start_fleet(workers_started, env, 3, concurrency=2)
    per_channel = 6
    handles = [submit_action("slack", "send_message", {"channel": CHANNELS[i % 3], "text": f"m{i}"})
               for i in range(3 * per_channel)]
    succeeded(handles, 60)
    calls = by_channel(posts(sandbox_client))
    assert sorted(calls) == sorted(CHANNELS) and all(len(c) == per_channel for c in calls.values())
    spans = []
    for channel, reqs in calls.items():
        times = [r["started"] for r in reqs]
        assert_within_rate(times, rate=1.0, burst=1, what=channel)
        assert times[-1] - times[0] >= (per_channel - 1) - 0.6, channel  # the limit really bit
        spans.append((times[0], times[-1]))
    # In parallel: the three channels' calls overlap in time; one after the other would take three times as long.
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    assert last - first < 1.5 * max(e - s for s, e in spans)
    print(f"\n1/s per channel: {3 * per_channel} messages to 3 channels in {last - first:.1f}s, "
          f"per channel {[round(e - s, 1) for s, e in spans]}s")

    # The same running fleet: no rate per channel any more, at most 2 calls at once per channel.
    # What `opsq ratelimit set slack --per channel --rate 0 --concurrency 2` does (the command itself is run in the
    # next test).
    rl.set_limit("slack", "channel", rate=0, concurrency=2, actor="ops", reason="test")
    sandbox_client.clear_requests()
    sandbox_client.fault("slack", "ok", latency_ms=300)  # each call is held 0.3 s: they would pile up
    # Grouped by channel: the first six messages the six processes take are all for one channel.
    handles = [submit_action("slack", "send_message", {"channel": channel, "text": f"c{i}"})
               for channel in CHANNELS for i in range(6)]
    succeeded(handles, 60)
    calls = by_channel(posts(sandbox_client))
    overlaps = {channel: max_overlap(reqs) for channel, reqs in calls.items()}
    assert all(len(calls[c]) == 6 for c in CHANNELS)
    assert max(overlaps.values()) == 2, overlaps  # reached, never exceeded
    assert int(redis_client.hget(keys.stats("slack"), "concurrency_waits") or 0) > 0
    assert [(r["per"], r["concurrency"], r["source"]) for r in rl.status("slack")["limits"]] == [
        ("channel", 2, "runtime")]


def test_ratelimit_set_reaches_running_workers_within_a_second(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite(OPSQ_RATE_LIMITS='{"slack": {"rate": 0}}')
    start_fleet(workers_started, env, 2, concurrency=2)
    channel = CHANNELS[0]
    handles: list[ActionHandle] = []
    stop = threading.Event()

    def submitter() -> None:  # about 8 messages a second to one channel, unlimited at first
        i = 0
        while not stop.is_set():
            handles.append(submit_action("slack", "send_message", {"channel": channel, "text": f"s{i}"}))
            i += 1
            time.sleep(0.12)

    thread = threading.Thread(target=submitter, daemon=True)
    thread.start()
    time.sleep(1.5)
    set_at = time.time()
    out = opsq(env, "ratelimit", "set", "slack", "--rate", "1/s", "--per", "channel", "--actor", "ops")
    assert out.returncode == 0, out.stdout + out.stderr
    # The change is written just before its audit entry (workers.store.audit.audited_change): by then at the latest.
    (entry,) = [e for e in audit.entries() if e["action"] == "ratelimit_set"]
    applied = entry["at"].timestamp()
    assert set_at < applied < time.time()
    time.sleep(2.5)
    lifted = time.time()
    assert rl.unset_limit("slack", "channel", actor="ops")  # what `opsq ratelimit unset slack --per channel` does
    time.sleep(0.5)
    stop.set()
    thread.join(5)
    succeeded(handles, 60)
    times = [r["started"] for r in posts(sandbox_client)]
    before = [t for t in times if set_at - 1.0 <= t < set_at]
    assert len(before) >= 4, before  # unlimited before: the submitter's pace
    limited = [t for t in times if applied + 1.0 <= t < lifted]
    assert len(limited) >= 2
    assert_within_rate(limited, rate=1.0, burst=1, what="after opsq ratelimit set")
    # After the unset the backlog drains at the workers' pace, not 1/s.
    after = [t for t in times if t >= lifted]
    assert len(after) >= 10 and after[9] - after[0] < 3.0, after[:10]
    print(f"\nratelimit set: {len(before)} calls in the second before, {len(limited)} in the "
          f"{lifted - applied - 1.0:.1f}s from a second after it was applied, {len(after)} drained after unset")


def test_a_429_on_one_worker_pauses_that_channel_for_every_worker(opsq_env_sqlite, workers_started, sandbox_client,
                                                                  redis_client, monkeypatch):
    limits = '{"slack": {"channel": {"rate": "4/s", "burst": 1}}}'
    env = opsq_env_sqlite(OPSQ_RATE_LIMITS='{"slack": {"rate": 0}}', OPSQ_KEY_LIMITS=limits,
                          OPSQ_RETRY_CAP_S="5")
    monkeypatch.setenv("OPSQ_KEY_LIMITS", limits)  # this process reads the status as the workers see it
    reload_settings()
    start_fleet(workers_started, env, 3, concurrency=1)
    hit, other = CHANNELS[0], CHANNELS[1]
    handles = [submit_action("slack", "send_message", {"channel": channel, "text": f"p{i}"})
               for i in range(16) for channel in (hit, other)]
    time.sleep(1.5)  # both channels flowing through the three workers
    sandbox_client.fault("slack", "rate_limit", retry_after=3, times=1, body_match={"channel": hit})
    limited = None
    deadline = time.monotonic() + 10
    while limited is None and time.monotonic() < deadline:
        limited = next((r for r in posts(sandbox_client) if r["status"] == 429), None)
        time.sleep(0.05)
    assert limited is not None, "no call got the 429"
    seen = rl.status("slack")  # during the pause: what an operator sees
    paused = [w for w in seen["waiting"] if w["state"] == "paused"]
    assert [(w["per"], w["key"]) for w in paused] == [("channel", hit)], seen["waiting"]
    assert 1.5 < paused[0]["for_s"] <= 3.0
    scrape = generate_latest(metrics.registry()).decode()
    assert 'opsq_rate_limit_keys_waiting{per="channel",platform="slack",state="paused"} 1.0' in scrape
    assert 'opsq_rate_limit_pauses_total{per="channel",platform="slack"} 1.0' in scrape
    succeeded(handles, 60)

    calls = by_channel(posts(sandbox_client))
    answered = limited["finished"]
    # Calls admitted before the 429 was settled may still arrive just after it; then nothing for 3 s.
    in_flight = [r for r in calls[hit] if answered <= r["started"] < answered + 0.3 and r is not limited]
    assert len(in_flight) <= 1, in_flight
    during = [r["started"] - answered for r in calls[hit] if answered + 0.3 <= r["started"] < answered + 2.95]
    assert during == [], during
    assert any(answered + 2.95 <= r["started"] for r in calls[hit])  # and it resumed
    others = [r for r in calls[other] if answered + 0.3 <= r["started"] < answered + 2.95]
    assert len(others) >= 5, len(others)  # the other channel was not paused (4/s)
    print(f"\n429 with Retry-After 3: {hit} quiet for "
          f"{min(r['started'] for r in calls[hit] if r['started'] > answered + 0.3) - answered:.2f}s, "
          f"{len(others)} calls to {other} meanwhile")
