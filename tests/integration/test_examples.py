"""docs/examples depend on no port: order-rollback.yaml reaches its payment service through the worker's
webhook base URL (`{{ settings.webhook_base_url }}`), so with the sandbox on any port the payment is refused
for the reason the example stages (HTTP 402), never by a connection refused on a hard-coded port."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.opsq_cli import opsq
from workers.guards import breaker
from workers.guards.base import BreakerState
from workflows import state
from workflows.client import submit_workflow
from workflows.status import WorkflowStatus

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
FINISHED = (WorkflowStatus.ROLLED_BACK, WorkflowStatus.ROLLBACK_FAILED, WorkflowStatus.SUCCEEDED,
            WorkflowStatus.FAILED)


def test_order_rollback_reaches_the_sandbox_on_a_non_default_port(opsq_env_sqlite, workers_started, sandbox,
                                                                    sandbox_client):
    assert not sandbox.url.endswith(":8765")  # the port the example used to hard-code
    workers_started(opsq_env_sqlite())
    sandbox_client.fault("webhook", "error", status=402, match="/payments/")
    refused = submit_workflow(EXAMPLES / "order-rollback.yaml", {"order_id": "P-1"})
    assert refused.wait(60, until=FINISHED).status == WorkflowStatus.ROLLED_BACK
    charge = next(s for s in state.steps(refused.id) if s["step_id"] == "charge")
    assert charge["status"] == "failed" and "HTTP 402" in charge["error"], charge["error"]
    calls = sandbox_client.requests(platform="webhook")
    assert [(c["path"], c["status"]) for c in calls] == [("/webhook/payments/charge", 402)]
    assert calls[0]["body"] == {"order": "P-1", "amount": 49.9}

    # Nothing else was wrong: without the fault the same example goes through, and no breaker opened.
    sandbox_client.clear_faults()
    paid = submit_workflow(EXAMPLES / "order-rollback.yaml", {"order_id": "P-2"})
    assert paid.wait(60, until=FINISHED).status == WorkflowStatus.SUCCEEDED
    assert breaker.status("webhook").state == BreakerState.CLOSED


def test_a_run_waiting_at_a_gate_names_the_approval_and_the_command_that_gives_it(opsq_env_sqlite,
                                                                                   workers_started):
    env = opsq_env_sqlite()
    workers_started(env)
    example = str(EXAMPLES / "approval-gates.yaml")
    as_json = opsq(env, "workflow", "run", example, "--wait", "--json")
    assert as_json.returncode == 0, as_json.stderr
    out = json.loads(as_json.stdout)
    (approval,) = state.approvals(workflow_id=out["id"])
    assert out["status"] == "awaiting_approval"
    assert out["approvals"] == [{"id": approval["id"], "step_ids": ["announce"]}]
    shown = opsq(env, "workflow", "status", out["id"])
    assert f"approval {approval['id']} waits for step(s) announce" in shown.stdout, shown.stdout
    assert f"    opsq approvals approve {approval['id']} --actor NAME" in shown.stdout
    approved = opsq(env, "approvals", "approve", approval["id"], "--actor", "reviewer", "--wait")
    assert approved.returncode == 0, approved.stderr
    assert f"workflow {out['id']}  offboarding  succeeded" in approved.stdout
    assert "waits for step(s)" not in approved.stdout  # nothing left to approve
