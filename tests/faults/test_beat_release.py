"""Drills on beat's release of scheduled actions (workers.scheduling.release_due: claim_scheduled, then the send).

- The database down (a PostgreSQL the test owns) while actions come due: beat does not die, sends nothing while
  it cannot claim, sends each once when the database is back.
- Beat SIGKILLed between the claim (the row `queued`) and the send: the next leader sees that the last one did
  not stop cleanly and runs the lost-message scan at once, so the action is sent, once, without waiting for
  detect_stuck's OPSQ_STUCK_AFTER_S (15 minutes here)."""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path

import pytest

from tests.support.wait import wait_for
from tests.support.worker import start_beat, stop_beat
from workers.client import submit_action
from workers.settings import reload_settings
from workers.status import ActionStatus
from workers.store import actions as store
from workers.store import db
from workers.store.models import as_utc, utcnow

pytestmark = pytest.mark.integration

COULD_NOT_SEND = "could not send the scheduled actions that are due"


def _calls_per_text(sandbox_client) -> collections.Counter[str]:
    return collections.Counter(r["body"]["text"] for r in sandbox_client.requests(platform="slack")
                               if isinstance(r.get("body"), dict) and "text" in r["body"])


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_beat_survives_the_database_down_and_sends_each_due_action_once_it_is_back(
        owned_pg, opsq_env_sqlite, workers_started, sandbox_client, monkeypatch, tmp_path):
    env = opsq_env_sqlite(OPSQ_DATABASE_URL=owned_pg.url)
    monkeypatch.setenv("OPSQ_DATABASE_URL", owned_pg.url)
    reload_settings()
    db.reset_engine()
    workers_started(env, queues="slack,control")
    beat_log = tmp_path / "beat.log"
    beat = start_beat(env, beat_log)
    try:
        wait_for(lambda: "now the leader" in _text(beat_log), 30, "beat leading")
        handles = [submit_action("slack", "send_message", {"channel": "#later", "text": f"m{i}"}, countdown=3)
                   for i in range(5)]
        due = max(as_utc(store.get(h.id).scheduled_for) for h in handles)

        owned_pg.stop()
        wait_for(lambda: utcnow() > due, 15, "the actions' time")
        # Ticks after they came due: each failed to look (the database is down), and beat goes on.
        seen = _text(beat_log).count(COULD_NOT_SEND)
        wait_for(lambda: _text(beat_log).count(COULD_NOT_SEND) >= seen + 2, 30, "two more ticks that could not send")
        assert beat.poll() is None, _text(beat_log)[-3000:]
        assert sandbox_client.requests(platform="slack") == []

        owned_pg.start()
        for h in handles:
            assert h.wait(60).status == ActionStatus.SUCCEEDED, _text(beat_log)[-3000:]
        assert _calls_per_text(sandbox_client) == collections.Counter(f"m{i}" for i in range(5))  # once each
        assert beat.poll() is None, _text(beat_log)[-3000:]
    finally:
        stop_beat(beat)


def test_beat_killed_between_the_claim_and_the_send_the_next_leader_sends_it_once(
        opsq_env_sqlite, workers_started, sandbox_client, tmp_path):
    held = tmp_path / "held"
    env = opsq_env_sqlite(OPSQ_STUCK_AFTER_S="900")  # detect_stuck would take 15 minutes: not what sends it here
    workers_started(env, queues="slack,maintenance,control")
    first_log = tmp_path / "beat1.log"
    first = start_beat({**env, "OPSQ_TEST_HOLD_SEND_FILE": str(held)}, first_log, app="tests.support.fault_app")
    second = None
    try:
        wait_for(lambda: "now the leader" in _text(first_log), 30, "the first beat leading")
        handle = submit_action("slack", "send_message", {"channel": "#later", "text": "once"}, countdown=1)
        wait_for(lambda: _text(held).strip() == handle.id, 30, "the first beat holding the claimed action's send")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        # Claimed, not sent: the record says queued and there is no message.
        assert store.get(handle.id).status == ActionStatus.QUEUED
        assert sandbox_client.requests(platform="slack") == []

        second_log = tmp_path / "beat2.log"
        second = start_beat(env, second_log)
        assert handle.wait(60).status == ActionStatus.SUCCEEDED, _text(second_log)[-3000:]
        assert "did not stop cleanly" in _text(second_log)
        assert _calls_per_text(sandbox_client) == collections.Counter(["once"])
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        if second is not None:
            stop_beat(second)


def test_a_beat_that_stops_cleanly_leaves_nothing_to_recover(opsq_env_sqlite, redis_client, tmp_path):
    from beat.scheduler import LED_BY_KEY  # noqa: PLC0415
    from workers.held_messages import RECOVERY_KEY  # noqa: PLC0415

    env = opsq_env_sqlite()
    first_log, second_log = tmp_path / "beat1.log", tmp_path / "beat2.log"
    first = start_beat(env, first_log)
    try:
        wait_for(lambda: "now the leader" in _text(first_log), 30, "the first beat leading")
        assert redis_client.get(LED_BY_KEY) is not None
    finally:
        stop_beat(first)
    assert redis_client.get(LED_BY_KEY) is None
    second = start_beat(env, second_log)
    try:
        wait_for(lambda: "now the leader" in _text(second_log), 30, "the second beat leading")
        assert "did not stop cleanly" not in _text(second_log)
        assert redis_client.get(RECOVERY_KEY) is None
    finally:
        stop_beat(second)
