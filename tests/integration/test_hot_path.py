"""What the action's hot path trades, shown on real Redis, SQLite/PostgreSQL and worker processes:
submits audited in batches (audit_pending, sealed), success records written behind in batches (and what
a killed worker's buffer becomes), no Celery result for a standalone action, waiting on many actions."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine

from tests.integration.opsq_cli import opsq
from tests.support.wait import wait_for
from workers.client import current_status, submit_action, wait_all
from workers.guards.execution import live_state
from workers.store import audit
from workers.store.db import get_engine, submit_engine
from workers.store.models import ActionRun, AuditEntry, AuditPending
from workers.store.outcomes import BATCH

pytestmark = pytest.mark.integration


def count(model: type, *where: object) -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar() or 0)


def statuses(ids: list[str]) -> dict[str, str]:
    with get_engine().connect() as conn:
        return dict(conn.execute(select(ActionRun.id, ActionRun.status).where(ActionRun.id.in_(ids))).all())


def redis_states(ids: list[str]) -> list[str | None]:
    return [(live_state(i) or {}).get("state") for i in ids]


def test_submits_are_audited_in_batches_and_chained_in_commit_order(opsq_env):
    env = opsq_env()
    first = [submit_action("noop", "noop", {"echo": i}).id for i in range(3)]
    # Written with the record, not yet chained: no lock on the chain's head per submit.
    assert count(AuditPending) == 3 and count(AuditEntry) == 0
    out = opsq(env, "circuit", "reset", "slack", "--reason", "test", "--actor", "alice")
    assert out.returncode == 0, out.stderr
    # An entry chained at once takes the pending ones first: they were committed before it.
    assert count(AuditPending) == 0
    entries = audit.entries()
    assert [(e["action"], e["target"]) for e in entries] == [("submit", f"action:{a}") for a in first] + [
        ("circuit_reset", "platform:slack")]
    later = [submit_action("noop", "noop", {"echo": i}).id for i in range(2)]
    job = opsq(env, "maintenance", "run", "seal_audit")
    assert job.returncode == 0 and '"sealed": 2' in job.stdout, job.stdout + job.stderr
    listed = opsq(env, "audit", "list", "--json")
    assert all(a in listed.stdout for a in later)
    assert opsq(env, "audit", "verify").returncode == 0


def test_concurrent_submitters_and_operators_form_one_verifiable_chain(opsq_env):
    opsq_env()
    errors: list[BaseException] = []

    def submitter(n: int) -> None:
        try:
            for i in range(n):
                submit_action("noop", "noop", {"echo": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def operator(n: int) -> None:
        try:
            for i in range(n):
                audit.append("circuit_reset", f"platform:p{i}", {"n": i}, actor="op")
                audit.seal()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(25,)) for _ in range(3)]
    threads += [threading.Thread(target=operator, args=(10,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    audit.seal()  # what beat's seal_audit does; verify itself only reads
    verdict = audit.verify()
    assert verdict.ok and verdict.checked == 75 + 20 and verdict.pending == 0, verdict
    assert count(AuditPending) == 0
    ids = [e["id"] for e in audit.entries(limit=1000)]
    assert ids == list(range(1, 96))


def test_a_standalone_action_leaves_no_celery_result(opsq_env_sqlite, workers_started, redis_client):
    workers_started(opsq_env_sqlite(), queues="noop")
    handle = submit_action("noop", "noop", {"echo": 1})
    assert handle.wait(30).status == "succeeded"
    # Its outcome is in the store and in the guards' record, not a third time in Celery's backend.
    assert not redis_client.exists(f"celery-task-meta-{handle.id}")
    assert redis_states([handle.id]) == ["done"]


def test_buffered_success_records_are_written_on_warm_shutdown(opsq_env, workers_started):
    env = opsq_env(OPSQ_OUTCOME_FLUSH_MS="60000")  # nothing flushes by time during this test
    worker = workers_started(env, queues="noop")
    ids = [submit_action("noop", "noop", {"echo": i}).id for i in range(3)]
    wait_for(lambda: redis_states(ids) == ["done"] * 3, what="the three outcomes in Redis")
    assert set(statuses(ids).values()) == {"queued"}  # fewer than a batch: still in the workers' buffers
    worker.stop()  # SIGTERM: a warm shutdown flushes
    assert set(statuses(ids).values()) == {"succeeded"}


def test_a_full_batch_is_written_without_waiting_for_the_interval(opsq_env, workers_started):
    env = opsq_env(OPSQ_OUTCOME_FLUSH_MS="60000")
    workers_started(env, queues="noop")
    n = 2 * BATCH + 8  # over two processes, at least one of them fills a batch
    ids = [submit_action("noop", "noop", {"echo": i}).id for i in range(n)]
    wait_for(lambda: redis_states(ids).count("done") == n, what="every outcome in Redis")
    # Long before the 60 s interval: a full batch is written as soon as it is full.
    wait_for(lambda: list(statuses(ids).values()).count("succeeded") >= BATCH, timeout=10,
             what="a full batch written")


def test_outcomes_in_a_killed_workers_buffer_are_reconciled_from_redis(opsq_env, workers_started):
    env = opsq_env(OPSQ_OUTCOME_FLUSH_MS="60000", OPSQ_STUCK_AFTER_S="1")
    worker = workers_started(env, queues="noop")
    ids = [submit_action("noop", "noop", {"echo": i}).id for i in range(3)]
    wait_for(lambda: redis_states(ids) == ["done"] * 3, what="the three outcomes in Redis")
    worker.kill()  # SIGKILL: the buffer is gone
    assert set(statuses(ids).values()) == {"queued"}
    time.sleep(1.2)
    stuck = opsq(env, "queue", "stuck")
    assert all(i in stuck.stdout for i in ids) and "reconcile" in stuck.stdout, stuck.stdout + stuck.stderr
    out = opsq(env, "maintenance", "run", "detect_stuck")
    assert out.returncode == 0, out.stderr
    assert set(statuses(ids).values()) == {"succeeded"}
    with get_engine().connect() as conn:
        results = conn.execute(select(ActionRun.result).where(ActionRun.id.in_(ids))).scalars().all()
    assert sorted(r["echo"] for r in results) == [0, 1, 2]


def test_wait_all_waits_for_every_action_and_names_what_is_still_open(opsq_env_sqlite, workers_started):
    workers_started(opsq_env_sqlite(), queues="noop")
    handles = [submit_action("noop", "noop", {"echo": i}) for i in range(40)]
    wait_all(handles, timeout=60)
    # What a waiter reads says so at once; the database rows follow within the write-behind's interval.
    assert {current_status(h.id).status for h in handles} == {"succeeded"}
    wait_for(lambda: set(statuses([h.id for h in handles]).values()) == {"succeeded"}, timeout=5,
             what="the write-behind to commit the successes")
    stranded = [submit_action("slack", "send_message", {"channel": "#a", "text": "x"}) for _ in range(2)]
    with pytest.raises(TimeoutError, match=r"2 action\(s\) still open after 0.5s"):
        wait_all(handles + stranded, timeout=0.5)  # nobody consumes slack here


def test_submit_survives_a_connection_the_server_dropped(opsq_env_pg):
    opsq_env_pg()
    submit_action("noop", "noop", {"echo": 0})  # the submit engine now holds a pooled connection
    engine = submit_engine()
    raw = engine.raw_connection()
    pid = raw.driver_connection.info.backend_pid
    raw.close()  # back to the pool
    with get_engine().connect() as conn:  # a server restart, as far as that connection can tell
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

    def backend_gone() -> bool:
        # A transaction of its own each time: pg_stat_activity is a snapshot taken once per transaction.
        with get_engine().connect() as conn:
            return not conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                    {"pid": pid}).scalar()

    wait_for(backend_gone, what="the backend gone")
    disconnects: list[bool] = []
    listener = lambda ctx: disconnects.append(ctx.is_disconnect)  # noqa: E731
    event.listen(engine, "handle_error", listener)
    try:
        handle = submit_action("noop", "noop", {"echo": 1})
    finally:
        event.remove(engine, "handle_error", listener)
    assert disconnects == [True]  # the first attempt met the dropped connection; the retry went through
    assert count(ActionRun, ActionRun.id == handle.id) == 1
    assert count(AuditPending, AuditPending.target == f"action:{handle.id}") == 1


def test_a_submit_committed_during_a_seal_is_chained_by_the_next_one(opsq_env_pg):
    """PostgreSQL: a submit takes a lower pending id than one that commits first, and commits itself
    while a seal is between reading the pending rows and deleting them. It must be chained, not deleted
    unchained."""
    opsq_env_pg()
    slow = get_engine().connect()
    slow_tx = slow.begin()
    audit.defer(slow, audit.pending_entry("submit", "action:slow", {}, actor="t"))  # its id now, its commit later
    submit_action("noop", "noop", {"echo": 1})  # a higher id, committed at once
    fired: list[str] = []

    def commit_the_slow_one(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not fired and statement.lstrip().upper().startswith("SELECT") and "FROM audit_pending" in statement:
            fired.append(statement)
            slow_tx.commit()

    event.listen(Engine, "after_cursor_execute", commit_the_slow_one)
    try:
        sealed = audit.seal()
    finally:
        event.remove(Engine, "after_cursor_execute", commit_the_slow_one)
        slow.close()
    assert fired
    sealed += audit.seal()
    # Both chained (the slow one by the same seal's next read, or by the next seal), none deleted unchained.
    assert sealed == 2 and count(AuditPending) == 0
    assert "action:slow" in [e["target"] for e in audit.entries()]
    assert audit.verify().ok
