"""Operations on real Redis, PostgreSQL and worker processes: each beat job does its job, one beat runs
the schedule, lost actions are found, alerts fire and clear, queues pause and resume, health checks.
(The audit trail and backups have their own files: test_audit.py, test_backup.py.)"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, update

from beat import alerts
from beat.models import MaintenanceRun
from tests.integration.opsq_cli import ROOT, opsq
from tests.support.wait import stored, wait_for
from workers.client import ActionHandle, submit_action
from workers.guards import breaker
from workers.ops.queue_ops import priority_lists
from workers.store import audit
from workers.store.db import session
from workers.store.models import ActionRun
from workflows.client import submit_workflow

pytestmark = pytest.mark.integration


def queued_lists(redis_client, queue: str) -> int:
    return sum(redis_client.llen(k) for k in priority_lists(queue).values())


def test_a_lost_action_is_requeued_and_completes_once(opsq_env, workers_started, sandbox_client, redis_client):
    env = opsq_env(OPSQ_STUCK_AFTER_S="1")
    handle = submit_action("trello", "create_card", {"list_id": "l1", "name": "lost"})
    for key in priority_lists("trello").values():  # the broker lost the message
        redis_client.delete(key)
    time.sleep(1.2)
    out = opsq(env, "queue", "stuck")
    assert "would requeue" in out.stdout and handle.id in out.stdout
    out = opsq(env, "maintenance", "run", "detect_stuck")
    assert out.returncode == 0 and handle.id in out.stdout and "requeued" in out.stdout, out.stdout + out.stderr
    workers_started(env, queues="trello")
    assert handle.wait(30).status == "succeeded"
    assert len(sandbox_client.requests(platform="trello")) == 1
    out = opsq(env, "maintenance", "run", "detect_stuck")  # nothing more to do: it is done
    assert handle.id not in out.stdout


def test_an_outcome_only_in_redis_is_reconciled(opsq_env, workers_started, sandbox_client):
    env = opsq_env(OPSQ_STUCK_AFTER_S="1")
    workers_started(env, queues="slack")
    handle = submit_action("slack", "send_message", {"channel": "#a", "text": "x"})
    assert handle.wait(30).status == "succeeded"
    stored([handle.id])  # the write-behind has written it; now undo that
    with session() as s:  # as if the worker died between the Redis outcome and the database write
        s.execute(update(ActionRun).where(ActionRun.id == handle.id).values(status="queued", result=None,
                                                                              finished_at=None))
    time.sleep(1.2)
    out = opsq(env, "maintenance", "run", "detect_stuck")
    assert "reconciled" in out.stdout, out.stdout + out.stderr
    view = handle.status()
    assert view.status == "succeeded" and view.result and view.result["ts"]
    assert len(sandbox_client.requests(platform="slack")) == 1


def test_expired_approval_is_rolled_back_by_the_maintenance_job(opsq_env, workers_started, sandbox_client):
    env = opsq_env()
    workers_started(env)
    spec = {"name": "gate", "approval_expires_s": 1, "steps": [
        {"id": "a", "platform": "gdrive", "action": "create_file", "params": {"name": "a.txt"}},
        {"id": "b", "platform": "slack", "action": "send_message", "params": {"channel": "#x", "text": "y"},
         "depends_on": ["a"], "requires_approval": True}]}
    handle = submit_workflow(spec)
    assert handle.wait(30).status == "awaiting_approval"
    time.sleep(1.2)
    out = opsq(env, "maintenance", "run", "expire_approvals")
    assert out.returncode == 0 and "expired" in out.stdout
    assert handle.wait(30, until=("rolled_back", "rollback_failed")).status == "rolled_back"
    assert sandbox_client.state(platform="gdrive")["files"] == []


def test_an_alert_fires_once_and_clears_once(opsq_env, workers_started, sandbox_client):
    env = opsq_env(OPSQ_ALERT_BREAKER_OPEN_FOR_S="0", OPSQ_ALERT_MIN_SAMPLE="3")
    workers_started(env, queues="notion")
    sandbox_client.fault("notion", "error", status=400)
    for i in range(4):
        submit_action("notion", "create_task", {"database_id": "d", "title": f"t{i}"}).wait(30)
    breaker.force_open("trello", "test", "drill")
    first = opsq(env, "maintenance", "run", "evaluate_alerts")
    assert "success_rate:notion" in first.stdout and "breaker_open:trello" in first.stdout, first.stdout
    again = opsq(env, "maintenance", "run", "evaluate_alerts")  # still true: nothing new fires
    assert '"fired": []' in again.stdout, again.stdout
    firing = {a["key"] for a in alerts.alerts(state="firing")}
    assert {"success_rate:notion", "breaker_open:trello"} <= firing
    breaker.reset("trello", "test", "drill over")
    cleared = opsq(env, "maintenance", "run", "evaluate_alerts")
    assert "breaker_open:trello" in cleared.stdout.split('"cleared"')[1].split("]")[0], cleared.stdout
    rows = [a for a in alerts.alerts() if a["key"] == "breaker_open:trello"]
    assert len(rows) == 1 and rows[0]["state"] == "cleared"  # one alert: fired once, cleared once
    listed = opsq(env, "alerts", "list")
    assert "success rate" in listed.stdout


def test_two_beats_run_each_scheduled_job_once_per_interval(opsq_env_sqlite, workers_started, tmp_path):
    env = opsq_env_sqlite(OPSQ_BEAT_INTERVALS='{"evaluate_alerts": 1, "detect_stuck": 1.5}')
    workers_started(env, queues="maintenance")
    paths = [tmp_path / f"beat{i}.log" for i in range(2)]
    logs = [open(path, "w") for path in paths]  # noqa: SIM115 - closed below
    beats = [subprocess.Popen([sys.executable, "-m", "workers.cli.main", "beat", "-l", "INFO"], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT) for log in logs]

    def output() -> list[str]:
        return [path.read_text() for path in paths]

    def runs() -> dict[str, int]:
        with session() as s:
            return dict(s.execute(select(MaintenanceRun.name, func.count()).where(MaintenanceRun.origin == "beat")
                                  .group_by(MaintenanceRun.name)).all())

    try:
        # Both beats up, each having taken its part (how long a beat takes to start is the machine's business);
        # then as many runs as the schedule makes, with the second beat standing by all along.
        wait_for(lambda: sum(text.count("now the leader") + text.count("standing by") for text in output()) >= 2,
                 60, "both beats to take their part")
        before = runs()
        wait_for(lambda: all(runs().get(name, 0) - before.get(name, 0) >= n
                             for name, n in (("evaluate_alerts", 4), ("detect_stuck", 3))),
                 60, "4 runs of evaluate_alerts and 3 of detect_stuck after both beats were up")
    finally:
        for b in beats:
            b.terminate()
        for b in beats:
            b.wait(15)
        for log in logs:
            log.close()
    texts = output()
    assert sum(text.count("now the leader") for text in texts) == 1, texts[0][-3000:] + texts[1][-3000:]
    leader, standby = (texts[0], texts[1]) if "now the leader" in texts[0] else (texts[1], texts[0])
    assert "standing by" in standby and "Sending due task" not in standby, standby[-3000:]  # one beat sends
    done = runs()
    for name in ("evaluate_alerts", "detect_stuck"):
        # Each run was sent once, by the leader, on its schedule: a run sent twice would outnumber the sends.
        assert done.get(name, 0) <= leader.count(f"Sending due task {name} "), (name, done, leader[-3000:])


def test_queue_pause_resume_and_a_worker_started_while_paused(opsq_env_sqlite, workers_started, sandbox_client,
                                                             redis_client):
    env = opsq_env_sqlite()
    workers_started(env, queues="slack,gdrive")
    assert submit_action("slack", "send_message", {"channel": "#a", "text": "before"}).wait(20).status == "succeeded"
    out = opsq(env, "queue", "pause", "slack")
    assert out.returncode == 0 and "stopped consuming" in out.stdout, out.stdout + out.stderr
    paused_at = time.monotonic()
    held = submit_action("slack", "send_message", {"channel": "#a", "text": "held"})
    other = submit_action("gdrive", "create_file", {"name": "goes-through"})
    assert other.wait(20).status == "succeeded"  # the other queue keeps going
    late = workers_started(env, queues="slack")  # started while paused: must not consume it
    time.sleep(max(0.0, 2.0 - (time.monotonic() - paused_at)))
    assert held.status().status == "queued" and queued_lists(redis_client, "slack") == 1
    assert "paused" in late.log()
    status = opsq(env, "queue", "status", "--json")
    assert '"paused": true' in status.stdout
    out = opsq(env, "queue", "resume", "slack")
    assert out.returncode == 0, out.stderr
    assert held.wait(20).status == "succeeded"
    assert [r["body"]["text"] for r in sandbox_client.requests(platform="slack")] == ["before", "held"]
    assert [e["action"] for e in audit.entries() if e["action"].startswith("queue_")] == ["queue_pause",
                                                                                         "queue_resume"]


def test_queue_clear_drops_and_records(opsq_env_sqlite, redis_client):
    env = opsq_env_sqlite()
    handles = [submit_action("webhook", "post", {"url": "http://127.0.0.1:9/x"}) for _ in range(3)]
    refused = opsq(env, "queue", "clear", "webhook")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    out = opsq(env, "queue", "clear", "webhook", "--yes")
    assert out.returncode == 0 and "dropped 3" in out.stdout
    assert queued_lists(redis_client, "webhook") == 0
    assert all(ActionHandle(h.id).status().status == "failed" for h in handles)
    (entry,) = audit.entries(action="queue_clear")
    assert entry["detail"]["dropped"] == 3 and {m["id"] for m in entry["detail"]["messages"]} == {h.id for h in handles}


def test_health_validate_env_and_test_auth(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    unhealthy = opsq(env, "health")
    assert unhealthy.returncode == 1 and "no worker answered" in unhealthy.stdout
    workers_started(env)
    healthy = opsq(env, "health", "--json")
    assert healthy.returncode == 0, healthy.stdout
    assert '"name": "redis"' in healthy.stdout and '"name": "database"' in healthy.stdout
    shown = opsq({**env, "OPSQ_SLACK_TOKEN": "xoxb-very-secret-token-1234"}, "validate-env")
    assert shown.returncode == 0 and "xoxb-very-secret-token-1234" not in shown.stdout
    assert "OPSQ_SLACK_TOKEN" in shown.stdout and "****34" in shown.stdout
    auth = opsq(env, "test-auth")
    assert auth.returncode == 0 and auth.stdout.count("OK") == 5, auth.stdout
    bad = opsq({**env, "OPSQ_TRELLO_TOKEN": "invalid"}, "test-auth", "trello")
    assert bad.returncode == 1 and "[auth]" in bad.stdout


def test_logs_analysis_and_metrics_read_the_store(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    workers_started(env)
    sandbox_client.fault("gdrive", "error", status=404, times=2)
    for i in range(4):
        submit_action("gdrive", "create_file", {"name": f"f{i}"}).wait(30)
    errors = opsq(env, "logs", "errors", "--json")
    assert errors.stdout.count('"kind": "permanent"') == 2
    analysis = opsq(env, "analyze", "failures", "--since", "1h")
    assert "gdrive.create_file  [permanent]" in analysis.stdout and "2 x" in analysis.stdout
    metrics = opsq(env, "metrics", "--json")
    assert '"success_rate": 0.5' in metrics.stdout and '"p95_s"' in metrics.stdout
    platform = opsq(env, "logs", "platform", "gdrive")
    assert platform.stdout.count("create_file") == 4
    bad = opsq(env, "analyze", "failures", "--since", "yesterday")
    assert bad.returncode != 0 and "--since takes a duration" in bad.stderr
