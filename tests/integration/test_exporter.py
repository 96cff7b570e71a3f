"""`opsq exporter` (issue 13, item 1): real worker processes run actions against the sandbox, a real exporter
process serves /metrics over HTTP, and what it serves is checked against the store and against the faults
injected in the sandbox, and the workflows' and beat's figures against what the test did. (A real Prometheus
scraping it and the alert rules: test_prometheus.py.) `opsq metrics` and beat's alerts are checked to read the same
figures (item 4)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from beat import alerts
from tests.integration.opsq_cli import opsq
from tests.support.redis_server import OwnedRedis, free_port
from tests.support.served import Served
from tests.support.wait import stored, wait_for
from tests.support.worker import ROOT
from workers.client import submit_action, wait_all
from workers.store import actions as store
from workers.store.db import get_engine
from workers.store.models import ActionRun, utcnow
from workflows.client import submit_workflow

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Exporter(Served):
    def __init__(self, env: dict[str, str], log_dir: Path, *args: str) -> None:
        super().__init__("exporter", "/metrics", env, log_dir, *args)
        self.metrics_url = f"{self.url}/metrics"

    def scrape(self, **headers: str) -> Samples:
        response = self.http.get("/metrics", headers=headers)
        assert response.status_code == 200, response.text
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(response.text) for s in family.samples}



@pytest.fixture
def exporters(tmp_path: Path) -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for e in started:
        e.stop()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_exporter_serves_what_the_workers_did(opsq_env, workers_started, sandbox, sandbox_client, exporters,
                                                  tmp_path):
    env = opsq_env(OPSQ_RETRY_BASE_S="0.1", OPSQ_RETRY_CAP_S="0.2",
                   OPSQ_BREAKERS=json.dumps({"webhook": {"failure_threshold": 2, "open_s": 600}}))
    sandbox_client.fault("trello", "error", status=503, times=2)  # two attempts fail, the third succeeds
    sandbox_client.fault("notion", mode="auth")  # refused: failed for good, dead-lettered
    workers_started(env, queues="noop,trello,notion,control")
    done = [submit_action("noop", "noop", {"echo": i}) for i in range(3)]
    done.append(submit_action("trello", "create_card", {"list_id": "l", "name": "retry me"}))
    done.append(submit_action("notion", "create_task", {"database_id": "d", "title": "t"}))
    waiting = [submit_action("gsheets", "append_row", {"sheet": "s", "values": [1]}, priority=p)
               for p in ("high", "normal", "normal")]  # no worker consumes gsheets
    gated = submit_workflow({"name": "gated", "steps": [
        {"id": "a", "platform": "noop", "action": "noop", "params": {"echo": 1}, "requires_approval": True}]})
    wait_all(done, timeout=60)
    stored([h.id for h in done])
    assert gated.wait(30).status == "awaiting_approval"
    ran = opsq(env, "maintenance", "run", "detect_stuck")
    assert ran.returncode == 0, ran.stderr
    exporter = Exporter(env, tmp_path)
    exporters.append(exporter)
    m = exporter.scrape()

    assert value(m, "opsq_exporter_source_up", source="redis") == 1
    assert value(m, "opsq_exporter_source_up", source="queues") == 1
    assert value(m, "opsq_exporter_source_up", source="database") == 1
    # The workers' counters, counted by the settle script.
    assert value(m, "opsq_action_attempts_total", platform="noop", action="noop", outcome="succeeded",
                 error_kind="") == 3
    assert value(m, "opsq_action_retries_total", platform="trello", action="create_card", error_kind="retryable") == 2
    assert value(m, "opsq_action_attempts_total", platform="trello", action="create_card", outcome="retried",
                 error_kind="retryable") == 2
    assert value(m, "opsq_action_attempts_total", platform="notion", action="create_task", outcome="failed",
                 error_kind="auth") == 1
    # The finished actions: the store's count.
    assert value(m, "opsq_actions_finished", platform="noop", action="noop", outcome="succeeded", error_kind="") == 3
    assert value(m, "opsq_actions_finished", platform="trello", action="create_card", outcome="succeeded",
                 error_kind="") == 1
    assert value(m, "opsq_actions_finished", platform="notion", action="create_task", outcome="failed",
                 error_kind="auth") == 1
    assert value(m, "opsq_action_attempt_duration_seconds_count", platform="trello", action="create_card",
                 role="action") == 3
    assert value(m, "opsq_platform_call_duration_seconds_count", platform="noop", action="noop", role="action") == 3
    assert value(m, "opsq_platform_call_duration_seconds_sum", platform="noop", action="noop", role="action") > 0
    # The store's figures, exactly: every (platform, action, status) it has.
    by_status: dict[tuple[str, str, str], int] = {}
    for platform, action, status, _kind, n in store.counts()[0]:
        by_status[(platform, action, status)] = by_status.get((platform, action, status), 0) + n
    for (platform, action, status), n in by_status.items():
        assert value(m, "opsq_actions", platform=platform, action=action, status=status) == n, (platform, status)
    assert value(m, "opsq_actions", platform="noop", action="noop", status="succeeded") == 3
    assert value(m, "opsq_dead_letters", platform="notion", action="create_task", error_kind="auth") == 1
    # The queues: what waits, by priority.
    assert value(m, "opsq_queue_messages", queue="gsheets", priority="normal") == 2
    assert value(m, "opsq_queue_messages", queue="gsheets", priority="high") == 1
    assert value(m, "opsq_queue_oldest_message_age_seconds", queue="gsheets") > 0
    assert value(m, "opsq_breaker_state", platform="webhook", state="closed") == 1
    assert {store.get(h.id).status for h in waiting} == {"queued"}  # the depth above is these three
    # The workflows' and beat's parts.
    assert value(m, "opsq_exporter_source_up", source="workflows") == 1
    assert value(m, "opsq_exporter_source_up", source="beat") == 1
    assert value(m, "opsq_workflows", status="awaiting_approval") == 1
    assert value(m, "opsq_workflows", status="succeeded") == 0
    assert value(m, "opsq_approvals_pending") == 1
    assert value(m, "opsq_approval_oldest_pending_age_seconds") > 0
    assert value(m, "opsq_beat_up") == 0  # no beat runs here
    assert value(m, "opsq_maintenance_last_run_ok", job="detect_stuck") == 1
    assert value(m, "opsq_maintenance_last_success_timestamp_seconds", job="detect_stuck") > 0
    assert value(m, "opsq_quarantine_messages") == 0 and value(m, "opsq_redis_memory_status") == 0

    # One source for each number (item 4): `opsq metrics` and beat's alert rules, for installations without
    # Prometheus, read the figures the exporter serves.
    shown = json.loads(opsq(env, "metrics", "--since", "1h", "--json").stdout)["platforms"]
    for platform in ("noop", "trello", "notion"):
        for outcome in ("succeeded", "failed"):
            served = sum(v for (name, labels), v in m.items() if name == "opsq_actions_finished"
                         and ("platform", platform) in labels and ("outcome", outcome) in labels)
            assert shown[platform][outcome] == served, (platform, outcome)
    alert_env = {**env, "OPSQ_ALERT_MIN_SAMPLE": "1", "OPSQ_ALERT_QUEUE_DEPTH": "2",
                 "OPSQ_ALERT_QUEUE_DEPTH_FOR_S": "0", "OPSQ_ALERT_OLDEST_MESSAGE_AGE_S": "0.01",
                 "OPSQ_ALERT_OLDEST_MESSAGE_FOR_S": "0"}
    ran = opsq(alert_env, "maintenance", "run", "evaluate_alerts")
    assert ran.returncode == 0, ran.stderr
    firing = {a["key"]: a["message"] for a in alerts.alerts(state="firing")}
    assert set(firing) == {"success_rate:notion", "queue_depth:gsheets", "oldest_message:gsheets", "dead_letters"}
    assert firing["success_rate:notion"].startswith("notion: success rate 0% over the last 15 min (1 actions")
    depth = sum(v for (name, labels), v in m.items()
                if name == "opsq_queue_messages" and ("queue", "gsheets") in labels)
    assert firing["queue_depth:gsheets"].startswith(f"queue gsheets: {depth:.0f} waiting, above 2")
    assert firing["dead_letters"].startswith("1 more dead letter(s) waiting than 15 min ago (1 in all")
    # The retention clean-up deletes old records; the count of finished actions does not drop with them.
    with get_engine().begin() as conn:
        conn.execute(update(ActionRun).where(ActionRun.platform.in_(["noop", "trello"]))
                     .values(finished_at=utcnow() - timedelta(days=60)))
    ran = opsq(env, "maintenance", "run", "cleanup")
    assert ran.returncode == 0, ran.stderr
    after = exporter.scrape()
    assert value(after, "opsq_actions", platform="noop", action="noop", status="succeeded") == 0
    for name, labels in [k for k in m if k[0] == "opsq_actions_finished"]:
        assert after.get((name, labels)) == m[(name, labels)], labels

    # A fault in the sandbox opens the webhook breaker; the next scrape says so.
    sandbox_client.fault("webhook", "error", status=503)
    workers_started(env, queues="webhook")
    submit_action("webhook", "post", {"url": f"{sandbox.url}/webhook/x", "json": {}}, max_attempts=5)
    wait_for(lambda: value(exporter.scrape(), "opsq_breaker_state", platform="webhook", state="open") == 1,
             timeout=60, what="the webhook breaker open in the metrics")
    m = exporter.scrape()
    assert value(m, "opsq_breaker_state", platform="webhook", state="closed") == 0
    assert value(m, "opsq_action_retries_total", platform="webhook", action="post", error_kind="retryable") == 2
    wait_for(lambda: value(exporter.scrape(), "opsq_guard_verdicts_total", platform="webhook", verdict="open") >= 1,
             timeout=30, what="the next attempt held by the open breaker, counted")
    # No id or secret in any label.
    text = httpx.get(exporter.metrics_url, timeout=30).text
    assert not any(h.id in text for h in done)


def test_the_exporter_wants_its_token_and_refuses_to_serve_others_without_one(opsq_env, exporters, tmp_path):
    env = opsq_env(OPSQ_EXPORTER_TOKEN="scrape-secret-91")
    exporter = Exporter(env, tmp_path)
    exporters.append(exporter)
    assert httpx.get(exporter.metrics_url, timeout=10).status_code == 401
    assert httpx.get(exporter.metrics_url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    samples = exporter.scrape(Authorization="Bearer scrape-secret-91")
    assert value(samples, "opsq_exporter_source_up", source="redis") == 1
    assert "scrape-secret-91" not in exporter.log.read_text(errors="replace")

    no_token = {k: v for k, v in opsq_env().items() if k != "OPSQ_EXPORTER_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "workers.cli.main", "exporter", "--host", "0.0.0.0", "--port",
                          str(free_port())], env=no_token, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: the exporter serves 0.0.0.0 only with a token: set OPSQ_EXPORTER_TOKEN (scrapes send it as a bearer "
        "token), or bind 127.0.0.1"]


DASHBOARDS = ROOT / "deploy" / "observability" / "grafana" / "dashboards"


def served_names(text: str) -> set[str]:
    """The sample names the exporter can serve: from its `# TYPE` lines (a family is declared even when it has
    no sample yet), with each type's suffixes."""
    names = {"up"}  # Prometheus' own, per target
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "counter":  # declared with or without its _total, depending on the client's version
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            else:
                names.add(name)
    return names


def test_every_dashboard_panel_queries_metrics_the_exporter_serves(opsq_env, exporters, tmp_path):
    exporter = Exporter(opsq_env(), tmp_path)
    exporters.append(exporter)
    served = served_names(httpx.get(exporter.metrics_url, timeout=30).text)
    files = sorted(DASHBOARDS.glob("*.json"))
    assert [f.name for f in files] == ["opsqueue-guards.json", "opsqueue-overview.json", "opsqueue-system.json",
                                       "opsqueue-workflows.json"]
    for path in files:
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"].startswith("opsqueue: ") and board["panels"], path.name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for p in board["panels"]:
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", (path.name, p["title"])
            for target in p["targets"]:
                # Metric names: identifiers not followed by "(" (functions) and not inside {...} or [...].
                expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", target["expr"])
                words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*(?!\s*\()", expr))
                metrics = {w for w in words if w.startswith("opsq_") or w == "up"}
                assert metrics, (path.name, p["title"], target["expr"])
                assert metrics <= served, (path.name, p["title"], metrics - served)


def test_a_source_that_goes_away_is_reported_and_the_scrape_still_answers(opsq_env, exporters, tmp_path):
    """Redis (one the test owns) killed under the exporter, then started again: the scrape keeps answering 200,
    says which sources it could not read, serves the others, and reads Redis again once it is back."""
    redis_server = OwnedRedis(tmp_path / "redis").start()
    try:
        env = {**opsq_env(), "OPSQ_REDIS_URL": redis_server.url()}
        exporter = Exporter(env, tmp_path)
        exporters.append(exporter)
        up = exporter.scrape()
        assert {s: value(up, "opsq_exporter_source_up", source=s) for s in SOURCES} == dict.fromkeys(SOURCES, 1)
        redis_server.kill()
        down = exporter.scrape()
        assert {s: value(down, "opsq_exporter_source_up", source=s) for s in SOURCES} == {
            "redis": 0, "queues": 0, "database": 1, "workflows": 1, "beat": 0}
        names = {name for name, _labels in down}
        assert "opsq_breaker_state" in {name for name, _labels in up}
        assert "opsq_breaker_state" not in names  # nothing served for a source that was not read...
        assert "opsq_workflows" in names  # ...the others still are
        redis_server.start()
        wait_for(lambda: value(exporter.scrape(), "opsq_exporter_source_up", source="redis") == 1, timeout=30,
                 what="the exporter reading Redis again")
    finally:
        redis_server.stop()


SOURCES = ("redis", "queues", "database", "workflows", "beat")
