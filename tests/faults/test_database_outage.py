"""PostgreSQL stopped for 30 s under load (issue 10, database loss): a cluster the test owns is stopped
(immediate: every connection cut) while workers run successes, retried failures and auth failures. Every action
reaches its final state in the store by itself soon after the database is back, dead letters included, without
detect_stuck (its threshold is the default 15 minutes here) and without a second platform call."""

from __future__ import annotations

import collections
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.owned_postgres import OwnedPostgres
from tests.support.wait import wait_for
from workers.client import submit_action
from workers.settings import reload_settings
from workers.status import ActionStatus
from workers.store import actions as store
from workers.store import db, outcomes
from workers.store.db import session
from workers.store.models import ActionRun, DeadLetter, utcnow

pytestmark = pytest.mark.integration

OUTAGE_S = 30
BOUND_S = 60  # every action final within this after the database is back


def test_every_outcome_survives_a_database_outage(owned_pg, opsq_env_sqlite, workers_started, sandbox_client,
                                                   monkeypatch):
    env = opsq_env_sqlite(OPSQ_DATABASE_URL=owned_pg.url, OPSQ_RATE_LIMITS='{"slack": {"rate": 0}, '
                          '"trello": {"rate": 0}, "notion": {"rate": 0}}', OPSQ_MAX_ATTEMPTS="3",
                          OPSQ_BREAKERS='{"trello": {"failure_threshold": 1000}, '
                                        '"notion": {"failure_threshold": 1000}}')
    monkeypatch.setenv("OPSQ_DATABASE_URL", owned_pg.url)
    reload_settings()
    db.reset_engine()
    sandbox_client.fault("slack", mode="ok", latency_ms=300)
    sandbox_client.fault("trello", mode="error", status=503, latency_ms=300, times=10)  # the first 10 calls fail
    sandbox_client.fault("notion", mode="auth", latency_ms=300)  # every call refused: failed for good
    for _ in range(2):
        workers_started(env, queues="slack,trello,notion", concurrency=2)

    ok = [submit_action("slack", "send_message", {"channel": "#db", "text": f"db-{i}"}).id for i in range(20)]
    retried = [submit_action("trello", "create_card", {"list_id": "l1", "name": f"card-{i}"}).id for i in range(10)]
    failed = [submit_action("notion", "create_task", {"database_id": "d1", "title": f"t-{i}"}).id for i in range(10)]
    wait_for(lambda: len(sandbox_client.requests()) >= 6, timeout=30, what="some calls made")
    owned_pg.stop()
    time.sleep(OUTAGE_S)
    owned_pg.start()
    back = time.monotonic()
    db.reset_engine()

    def final() -> dict[str, str]:
        with session() as s:
            return dict(s.execute(select(ActionRun.id, ActionRun.status)).all())

    wait_for(lambda: all(st in (ActionStatus.SUCCEEDED, ActionStatus.FAILED) for st in final().values()),
             timeout=BOUND_S, what="every action final in the store", interval=0.5)
    settled_in = time.monotonic() - back
    states = final()
    assert collections.Counter(states[i] for i in ok + retried) == {ActionStatus.SUCCEEDED: 30}
    assert collections.Counter(states[i] for i in failed) == {ActionStatus.FAILED: 10}
    with session() as s:
        dead = set(s.scalars(select(DeadLetter.action_id)).all())
    assert dead == set(failed)  # every auth failure in the dead letters, nothing else

    calls = sandbox_client.requests()
    slack = collections.Counter(c["body"]["text"] for c in calls if c["platform"] == "slack")
    assert slack == {f"db-{i}": 1 for i in range(20)}
    notion = [c for c in calls if c["platform"] == "notion"]
    assert len(notion) == 10  # an auth failure is final: one call each, however often its bookkeeping was redone
    assert len(sandbox_client.state(platform="trello")["cards"]) == 10  # each card created once
    print(f"\ndatabase outage: {OUTAGE_S}s; every action final {settled_in:.1f}s after the database was back")


def test_a_success_recorded_just_before_a_crash_is_kept(monkeypatch):
    """The worker's write-behind forgets a success once its commit returns, so that commit must be durable: one
    that did not wait for its WAL flush (synchronous_commit=off) was lost when the server stopped right after it,
    and the action stayed `queued` until detect_stuck. The WAL writer sleeps 10 s here, so a commit that left
    its flush to it is still in memory when the server is stopped (immediate: as a crash)."""
    home = Path(tempfile.mkdtemp(prefix="opsq-pg-"))
    server = OwnedPostgres(home, settings={"wal_writer_delay": "10s"}).create()
    try:
        monkeypatch.setenv("OPSQ_DATABASE_URL", server.url)
        reload_settings()
        db.reset_engine()
        ids = [f"crash-{i}" for i in range(2)]
        for action_id in ids:
            store.create(action_id=action_id, platform="slack", action="send_message", params={"text": action_id},
                         priority="normal", queue="slack", max_attempts=3)
        writer = outcomes.OutcomeWriter(interval_s=0.05)  # a worker process' write-behind (batched successes)
        writer.add(store.succeeded_row(ids[0], 1, {"ok": 1}, utcnow()))
        writer.stop()  # flushed: the writer holds nothing any more
        store.mark_succeeded(ids[1], 1, {"ok": 2}, utcnow())  # a success written at once (a redelivery's)
        server.stop()
        server.start()
        db.reset_engine()
        assert [store.get(action_id).status for action_id in ids] == [ActionStatus.SUCCEEDED] * 2
    finally:
        db.reset_engine()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
