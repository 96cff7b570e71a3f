"""The README's main command must not break silently: run the demo as a user would (quick variant)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_to_its_summary_on_embedded_defaults(tmp_path):
    # A fresh machine: no Redis or database configured, so the demo starts its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    env["HOME"] = str(tmp_path)
    out = tmp_path / "summary.json"
    result = subprocess.run([sys.executable, "-m", "workers.cli.main", "demo", "--quick", "--no-color",
                             "--json-out", str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Summary" in result.stdout and "Traceback" not in result.stderr
    summary = json.loads(out.read_text())
    assert summary["all_scenarios_passed"] is True
    assert summary["failed"] == 1  # the payment step of scenario 5, on purpose, and the summary says so
    assert list(summary["expected_failures"].values()) == ["scenario 5's payment, refused on purpose (HTTP 402)"]
    assert summary["unexpected_failures"] == []
    assert "expected failure: scenario 5's payment" in result.stdout
    assert {s["scenario"] for s in summary["scenarios"]} == {"1", "2", "3", "4", "4b", "4c", "5", "6", "7"}
    breaker = next(s for s in summary["scenarios"] if s["scenario"] == "4b")
    assert breaker["calls_during_outage"] <= breaker["bound"]
    assert next(s for s in summary["scenarios"] if s["scenario"] == "4c")["platform_calls"] == 1
    # Scenario 1 routes one action to each platform, webhook included.
    assert set(summary["by_platform"]) >= {"slack", "notion", "trello", "gdrive", "gsheets", "webhook"}
    # Scenario 2 runs on one worker process: priority first, then first in, first out.
    priority = next(s for s in summary["scenarios"] if s["scenario"] == "2")
    assert priority["order"] == ["critical #1", "critical #2", "low #1", "low #2", "low #3", "low #4"]
    assert summary["by_priority"]["critical"] == {"succeeded": 2}
    dashboard = next(s for s in summary["scenarios"] if s["scenario"] == "7")
    assert dashboard["platforms"]["trello"]["retries"] >= 2 and dashboard["workflows"]["rolled_back"] >= 2
    rollback = next(s for s in summary["scenarios"] if s["scenario"] == "5")
    assert rollback["compensation_order"] == ["notify", "log_row", "create_invoice", "reserve_stock"]
