"""The outcome writer's buffering rules, against a real SQLite store (workers.store.outcomes)."""

from __future__ import annotations

import uuid

import pytest

from tests.support.wait import wait_for
from workers.settings import reload_settings
from workers.store import actions, outcomes


def _submitted(n: int) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    for action_id in ids:
        actions.create(action_id=action_id, platform="noop", action="noop", params={}, priority="normal",
                       queue="noop", max_attempts=3)
    return ids


def _succeeded(ids: list[str]) -> int:
    return sum(actions.get(i).status == "succeeded" for i in ids)


@pytest.fixture
def writer(opsq_env_sqlite):
    w = outcomes.OutcomeWriter(interval_s=1.0)
    yield w
    w.stop()


def test_a_batch_begun_is_written_after_the_interval(writer):
    ids = _submitted(3)
    for i in ids:
        writer.add(actions.succeeded_row(i, 1, {"ok": True}, None))
    assert _succeeded(ids) == 0
    wait_for(lambda: _succeeded(ids) == 3, timeout=10, what="the batch after 1 s")
    later = _submitted(1)  # the thread sleeps again until the next batch begins
    writer.add(actions.succeeded_row(later[0], 1, {"ok": True}, None))
    wait_for(lambda: _succeeded(later) == 1, timeout=10, what="the next batch")


def test_a_full_batch_is_written_without_waiting_for_the_interval(opsq_env_sqlite):
    w = outcomes.OutcomeWriter(interval_s=600)
    try:
        ids = _submitted(outcomes.BATCH)
        for i in ids:
            w.add(actions.succeeded_row(i, 1, {"ok": True}, None))
        wait_for(lambda: _succeeded(ids) == outcomes.BATCH, timeout=5, what="the full batch, long before 600 s")
        (last,) = _submitted(1)
        w.add(actions.succeeded_row(last, 1, {"ok": True}, None))
        assert actions.get(last).status == "queued"  # a new batch has begun; it waits for its interval
    finally:
        w.stop()
    assert actions.get(last).status == "succeeded"  # stop() flushes the rest


def test_a_refused_batch_is_kept_and_retried(writer, monkeypatch):
    ids = _submitted(2)
    real = actions.mark_succeeded_many
    calls: list[int] = []

    def refuse_once(rows):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("database is down")
        real(rows)

    monkeypatch.setattr(actions, "mark_succeeded_many", refuse_once)
    for i in ids:
        writer.add(actions.succeeded_row(i, 1, {"ok": True}, None))
    wait_for(lambda: _succeeded(ids) == 2, timeout=10, what="the retried batch")
    assert calls[:2] == [2, 2]  # the same two rows again, none lost or doubled


def test_write_behind_is_off_without_guards_or_with_a_zero_interval(opsq_env_sqlite, monkeypatch):
    monkeypatch.setenv("OPSQ_GUARDS_ENABLED", "false")  # no outcome in Redis to fall back on
    reload_settings()
    assert outcomes.writer() is None
    monkeypatch.setenv("OPSQ_GUARDS_ENABLED", "true")
    monkeypatch.setenv("OPSQ_OUTCOME_FLUSH_MS", "0")
    reload_settings()
    assert outcomes.writer() is None
    (action_id,) = _submitted(1)
    outcomes.record_success(action_id, 1, {"ok": True}, None)
    assert actions.get(action_id).status == "succeeded"  # written at once
    monkeypatch.setenv("OPSQ_OUTCOME_FLUSH_MS", "50")
    reload_settings()
    w = outcomes.writer()
    assert w is not None and outcomes.writer() is w
    outcomes.shutdown()
