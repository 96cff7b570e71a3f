"""Issue 16, item 6: an expected failure (an action or a workflow step that fails for good) is one ERROR line in
the worker's log, ours; Celery's own "raised unexpected" with a traceback is not logged for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.wait import wait_for
from workers.client import submit_action

pytestmark = pytest.mark.integration


def _error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "ERROR" in line]


def test_an_action_that_fails_for_good_is_one_error_line(opsq_env_sqlite, workers_started, sandbox_client,
                                                          tmp_path: Path):
    env = opsq_env_sqlite()
    sandbox_client.fault("notion", mode="auth")  # refused: failed for good
    worker = workers_started(env)
    handle = submit_action("notion", "create_task", {"database_id": "d", "title": "t"})
    assert handle.wait(60).status == "failed"
    wait_for(lambda: "raised expected" in worker.log_path.read_text(errors="replace"), timeout=15,
             what="Celery's INFO line for the expected failure")
    log = worker.log_path.read_text(errors="replace")
    errors = _error_lines(log)
    assert len(errors) == 1 and "action failed for good" in errors[0], log
    assert "raised unexpected" not in log and "Traceback" not in log, log

    # A workflow's step fails for good the same way: one ERROR line for it, no Celery traceback.
    spec = tmp_path / "fails.yaml"
    spec.write_text(json.dumps({"name": "fails", "steps": [
        {"id": "a", "platform": "slack", "action": "send_message", "params": {"channel": "#t", "text": "a"}},
        {"id": "b", "platform": "notion", "action": "create_task", "params": {"database_id": "d", "title": "b"},
         "depends_on": ["a"]}]}))
    out = opsq(env, "workflow", "run", str(spec), "--wait", "--json")
    assert json.loads(out.stdout)["status"] == "rolled_back", out.stdout + out.stderr
    log = worker.log_path.read_text(errors="replace")
    errors = _error_lines(log)
    assert len(errors) == 2 and all("action failed for good" in e for e in errors), log
    assert "raised unexpected" not in log and "Traceback" not in log, log
