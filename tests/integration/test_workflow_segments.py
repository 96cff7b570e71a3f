"""Long workflows are sent in segments (workflows.compiler, OPSQ_WORKFLOW_SEGMENT_LEVELS): the last task of a
segment sends the next. Here segments of 2 levels, with a real worker: a chain runs to the end in order with
its templates, an approval gate inside a later segment holds and resumes, a failure in a later segment rolls
back the steps of the earlier ones, and a continuation delivered twice sends nothing twice."""

from __future__ import annotations

from typing import Any

import pytest

from workers.settings import reload_settings
from workers.store import actions as store
from workflows import state
from workflows.client import approve, submit_workflow
from workflows.compiler import continue_segment

pytestmark = pytest.mark.integration

K = "2"


def chain(n: int, **at: dict[str, Any]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(n):
        s: dict[str, Any] = {"id": f"s{i}", "platform": "noop", "action": "noop",
                             "params": {"echo": f"{{{{ steps.s{i - 1}.output.echo }}}}+{i}" if i else "0"}}
        if i:
            s["depends_on"] = [f"s{i - 1}"]
        s.update(at.get(f"s{i}", {}))
        steps.append(s)
    return {"name": "long", "steps": steps}


@pytest.fixture
def segmented(opsq_env_sqlite, workers_started, monkeypatch):
    env = opsq_env_sqlite(OPSQ_WORKFLOW_SEGMENT_LEVELS=K)
    monkeypatch.setenv("OPSQ_WORKFLOW_SEGMENT_LEVELS", K)  # this process submits: it cuts the first segment
    reload_settings()
    workers_started(env, queues="noop,control")
    return env


def test_a_chain_longer_than_a_segment_runs_to_the_end_in_order(segmented):
    handle = submit_workflow(chain(9))
    assert handle.wait(60).status == "succeeded"
    steps = {s["step_id"]: s for s in state.steps(handle.id)}
    assert [steps[f"s{i}"]["completed_seq"] for i in range(9)] == list(range(1, 10))
    assert steps["s8"]["output"]["echo"] == "0+1+2+3+4+5+6+7+8"  # each step saw the one before, across segments
    assert all(store.get(s["action_id"]).attempts == 1 for s in steps.values())
    continued = [e["detail"] for e in state.events(handle.id) if e["kind"] == "continued"]
    assert continued == [f"from level {n}: {2 if n < 8 else 1} step(s) sent" for n in (2, 4, 6, 8)]
    # a continuation delivered again (its worker died before the ack) sends nothing: its level was sent
    assert continue_segment(handle.id, 2, 4) == [] and continue_segment(handle.id, 8, 4) == []
    assert handle.status() == "succeeded"


def test_a_gate_in_a_later_segment_holds_the_workflow_until_approved(segmented):
    handle = submit_workflow(chain(8, s5={"requires_approval": True}))
    assert handle.wait(60).status == "awaiting_approval"
    steps = {s["step_id"]: s["status"] for s in state.steps(handle.id)}
    assert [steps[f"s{i}"] for i in range(8)] == ["succeeded"] * 5 + ["pending"] * 3
    approve(state.approvals(workflow_id=handle.id)[0]["id"], "tester")
    assert handle.wait(60).status == "succeeded"


def test_a_failure_in_a_later_segment_rolls_back_the_earlier_ones(segmented):
    handle = submit_workflow(chain(8, s5={"params": {"echo": "{{ steps.s0.output.nothing_here }}"}}))
    assert handle.wait(60, until=("rolled_back", "rollback_failed")).status == "rolled_back"
    steps = {s["step_id"]: s["status"] for s in state.steps(handle.id)}
    assert [steps[f"s{i}"] for i in range(5)] == ["succeeded"] * 5 and steps["s5"] == "failed"
    assert {steps["s6"], steps["s7"]} == {"skipped"}
    undone = [c["step_id"] for c in state.compensations(handle.id)]
    assert undone == ["s4", "s3", "s2", "s1", "s0"]  # newest first, across every segment
