"""A real Prometheus (Debian's `prometheus` package; `.ci/run` installs it) scraping a real `opsq exporter` while
real workers run actions against the sandbox, queried over its HTTP API; and the alert rules in
deploy/observability checked and unit-tested by `promtool` (every rule fires on its condition and clears)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_exporter import Exporter
from tests.support.redis_server import free_port
from tests.support.wait import stored, wait_for
from tests.support.worker import ROOT
from workers.client import submit_action, wait_all
from workers.store import actions as store

pytestmark = pytest.mark.integration

RULES_DIR = ROOT / "deploy" / "observability"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install prometheus); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_alert_rules_are_valid_and_each_fires_and_clears():
    promtool = binary("promtool")
    check = subprocess.run([promtool, "check", "rules", "rules.yml"], cwd=RULES_DIR, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout
    tested = subprocess.run([promtool, "test", "rules", "rules.test.yml"], cwd=RULES_DIR, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every rule has a test that fires it and one that sees it clear.
    rules = [line.split(":", 1)[1].strip() for line in (RULES_DIR / "rules.yml").read_text().splitlines()
             if line.strip().startswith("- alert:")]
    tests = (RULES_DIR / "rules.test.yml").read_text()
    for rule in rules:
        assert tests.count(f"alertname: {rule}") >= 2, rule


class Prometheus:
    def __init__(self, directory: Path, exporter_port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(RULES_DIR / "rules.yml", directory / "rules.yml")
        (directory / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - rules.yml\n"
            f"scrape_configs:\n  - job_name: opsqueue\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{exporter_port}']\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        self.proc = subprocess.Popen([binary("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={directory / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=60, what="Prometheus ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> float | None:
        """The value of a query that yields one sample, None when it yields none."""
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Exporter | Prometheus]]:
    started: list[Exporter | Prometheus] = []
    yield started
    for s in reversed(started):
        s.stop()


def test_prometheus_scrapes_the_exporter_and_evaluates_the_rules(opsq_env_sqlite, workers_started, sandbox,
                                                                 sandbox_client, services, tmp_path):
    binary("prometheus")
    # SQLite only: test_exporter.py checks the exporter's figures against both kinds of store.
    env = opsq_env_sqlite(OPSQ_BREAKERS='{"webhook": {"failure_threshold": 2, "open_s": 600}}', OPSQ_RETRY_BASE_S="0.1",
                   OPSQ_RETRY_CAP_S="0.2")
    sandbox_client.fault("notion", mode="auth")
    workers_started(env, queues="noop,notion,webhook")
    exporter = Exporter(env, tmp_path)
    services.append(exporter)
    prometheus = Prometheus(tmp_path / "prometheus", exporter.port)
    services.append(prometheus)

    handles = [submit_action("noop", "noop", {"echo": i}) for i in range(5)]
    handles.append(submit_action("notion", "create_task", {"database_id": "d", "title": "t"}))
    wait_all(handles, timeout=60)
    stored([h.id for h in handles])
    # What Prometheus stored from its scrapes equals what the store says.
    succeeded = sum(n for p, _a, s, _k, n in store.counts()[0] if p == "noop" and s == "succeeded")
    assert succeeded == 5
    wait_for(lambda: prometheus.query('sum(opsq_actions_finished{platform="noop",outcome="succeeded"})')
             == succeeded, timeout=30, what="the counter of noop successes in Prometheus")
    assert prometheus.query('sum(opsq_actions{platform="noop",status="succeeded"})') == succeeded
    assert prometheus.query('sum(opsq_actions_finished{platform="notion",outcome="failed",'
                            'error_kind="auth"})') == 1
    assert prometheus.query('sum(opsq_dead_letters{platform="notion"})') == 1
    assert prometheus.query('sum(opsq_platform_call_duration_seconds_count{platform="noop"})') == 5
    assert prometheus.query('up{job="opsqueue"}') == 1

    # A fault injected in the sandbox: the breaker's state and the queue behind it follow, in Prometheus.
    sandbox_client.fault("webhook", "error", status=503)
    submit_action("webhook", "post", {"url": f"{sandbox.url}/webhook/x", "json": {}}, max_attempts=5)
    wait_for(lambda: prometheus.query('opsq_breaker_state{platform="webhook",state="open"}') == 1, timeout=60,
             what="the webhook breaker open in Prometheus")
    for i in range(3):
        submit_action("gsheets", "append_row", {"sheet": "s", "values": [i]})  # no worker consumes gsheets
    wait_for(lambda: prometheus.query('sum(opsq_queue_messages{queue="gsheets"})') == 3, timeout=30,
             what="the gsheets queue depth in Prometheus")

    # The rules are loaded and evaluate: no beat runs here, so OpsqBeatNotRunning is pending (it fires after 5 min).
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert len(loaded) == 10 and all(r["health"] == "ok" for r in loaded.values()), loaded
    wait_for(lambda: any(a["labels"]["alertname"] == "OpsqBeatNotRunning" and a["state"] == "pending"
                         for a in httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]),
             timeout=30, what="OpsqBeatNotRunning pending in Prometheus")
