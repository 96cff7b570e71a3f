"""A kill storm (issues 10 and 11): 300 actions, whole workers SIGKILLed five times while they run them. Nothing is
lost, nothing is posted twice (a call in flight at a kill is found by its effect key, not repeated), and
everything is final long before the visibility
timeout (an hour) would have brought a dead worker's messages back: the messages a dead worker held are given
back by the others once its heartbeat stops (workers.held_messages), and the one it had popped but not yet
recorded is found by beat's recover_lost scan."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from beat.models import MaintenanceRun
from tests.support.wait import wait_for
from tests.support.worker import ROOT
from workers.client import submit_action
from workers.status import ActionStatus
from workers.store.db import session
from workers.store.models import ActionRun

pytestmark = pytest.mark.integration

N_ACTIONS = 300
KILLS = 5
LATENCY_MS = 60
# Past the lease a dead worker's action runs again; short here so the test is short (default: ~40 s).
LEASE_S = 8
BOUND_S = 120  # every action final within this after the last kill (the visibility timeout is 3600 s)


def _texts_called(sandbox_client) -> list[dict]:
    return [r for r in sandbox_client.requests(platform="slack")
            if isinstance(r.get("body"), dict) and str(r["body"].get("text", "")).startswith("storm-")]


def _messages(sandbox_client) -> list[dict]:
    return list(sandbox_client.state(platform="slack")["messages"])


def test_kill_storm_loses_nothing_and_calls_nothing_twice(opsq_env_sqlite, workers_started, sandbox_client,
                                                           tmp_path: Path, redis_client):
    env = opsq_env_sqlite(OPSQ_RATE_LIMITS='{"slack": {"rate": 0}}', OPSQ_IDEMPOTENCY_LEASE_S=str(LEASE_S),
                          OPSQ_CONSUMER_TTL_S="6")
    assert "OPSQ_VISIBILITY_TIMEOUT_S" not in env and "OPSQ_STUCK_AFTER_S" not in env  # the defaults: 1 h, 15 min
    sandbox_client.fault("slack", mode="ok", latency_ms=LATENCY_MS)
    workers = [workers_started(env, queues="slack,maintenance", concurrency=2) for _ in range(3)]
    beat_log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed below
    beat = subprocess.Popen([sys.executable, "-m", "workers.cli.main", "beat", "-l", "INFO"], env=env, cwd=ROOT,
                            stdout=beat_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: b"now the leader" in (tmp_path / "beat.log").read_bytes(), timeout=20, what="beat leading")
        # A channel ID, not a #name: Slack's conversations.history (the effect's lookup) takes IDs only.
        ids = [submit_action("slack", "send_message", {"channel": "C0STORM01", "text": f"storm-{i}"}).id
               for i in range(N_ACTIONS)]
        kills: list[float] = []
        for n in range(KILLS):
            wait_for(lambda n=n: len(_texts_called(sandbox_client)) >= (n + 1) * N_ACTIONS // (KILLS + 2),
                     timeout=60, what=f"progress before kill {n + 1}")
            victim = workers.pop(0)
            kills.append(time.time())
            victim.kill()  # the whole process group: main process and pool children, no goodbye
            workers.append(workers_started(env, queues="slack,maintenance", concurrency=2))
        last_kill = time.monotonic()

        def open_count() -> int:
            with session() as s:
                return len(s.scalars(select(ActionRun.id).where(ActionRun.id.in_(ids), ActionRun.status.not_in(
                    [ActionStatus.SUCCEEDED, ActionStatus.FAILED]))).all())

        wait_for(lambda: open_count() == 0, timeout=BOUND_S, what="every action final", interval=0.5)
        recovered_in = time.monotonic() - last_kill
        with session() as s:
            statuses = collections.Counter(s.scalars(select(ActionRun.status).where(ActionRun.id.in_(ids))).all())
        assert statuses == {ActionStatus.SUCCEEDED: N_ACTIONS}

        calls = _texts_called(sandbox_client)
        per_text = collections.defaultdict(list)
        for c in calls:
            per_text[c["body"]["text"]].append(c)
        assert sorted(per_text) == sorted(f"storm-{i}" for i in range(N_ACTIONS))  # none lost
        twice = {t: cs for t, cs in per_text.items() if len(cs) > 1}
        # A call in flight at the instant of a SIGKILL: its outcome is unknown to the guards (the worker died
        # before it could record it). After its lease the next attempt looks the message up by its effect
        # key (issue 11) instead of posting again: none is called twice, and the workspace holds one message
        # per action.
        assert twice == {}, {t: [(c["started"], c["finished"]) for c in cs] for t, cs in twice.items()}
        posted = collections.Counter(m.get("text") for m in _messages(sandbox_client)
                                     if str(m.get("text", "")).startswith("storm-"))
        assert posted == {f"storm-{i}": 1 for i in range(N_ACTIONS)}
        with session() as s:
            reconciled = s.scalars(select(ActionRun.id).where(ActionRun.id.in_(ids), ActionRun.reconciled)).all()
        given_back = sum(w.log().count("gave back") for w in workers)
        with session() as s:
            recoveries = s.scalars(select(MaintenanceRun.summary).where(MaintenanceRun.name == "recover_lost")).all()
        requeued = sum(len((r or {}).get("requeued", [])) for r in recoveries)
        print(f"\nkill storm: {N_ACTIONS} actions, {KILLS} SIGKILLs; all final {recovered_in:.1f}s after the last "
              f"kill; {len(reconciled)} reconciled (in flight at a kill, found by their effect key); 'gave back' "
              f"lines in survivors' logs: {given_back}; recover_lost runs: {len(recoveries)}, requeued by them: "
              f"{requeued}")
        assert beat.poll() is None
    finally:
        beat.terminate()
        beat.wait(15)
        beat_log.close()
