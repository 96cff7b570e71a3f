"""workflows.compiler: which Celery canvas a workflow's DAG becomes — a chain for a sequence, a group
(a chord, once something follows it) for parallel steps, a pause at an approval gate. The signatures are
inspected, never sent (building them needs a broker URL, not a broker)."""

from __future__ import annotations

from typing import Any

import pytest
from celery.canvas import Signature

from workers.priorities import priority_value
from workers.queues import CONTROL_QUEUE
from workflows.compiler import Plan, compile_segment, plan_segment, step_signature
from workflows.spec import WorkflowSpec, load

WF = "wf1"
HOOK = "https://hooks.example.com/services/T0/B0/SECRETPATH"


def step(step_id: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "platform": "slack", "action": "send_message",
            "params": {"channel": "#c", "text": step_id}, "depends_on": list(deps), **extra}


def spec(*steps: dict[str, Any]) -> WorkflowSpec:
    return load({"name": "w", "steps": list(steps)})


def compiled(s: WorkflowSpec, *, from_level: int = 0, approved: bool = False, done: frozenset[str] = frozenset(),
             priority: str = "normal", max_attempts: int = 4) -> Signature:
    plan = plan_segment(s, from_level=from_level, approved=approved, done=done)
    return compile_segment(WF, plan, s, {x.id: f"act-{x.id}" for x in s.steps}, priority=priority,
                           max_attempts=max_attempts)


def step_of(sig: Signature) -> str:
    assert sig.task == "opsq.execute_action", sig
    return sig.kwargs["step"]["step_id"]


def kind(sig: Signature) -> str:
    """chain, group or chord (Celery's own name for the canvas type), or a plain signature."""
    return sig.get("subtask_type") or "signature"


def is_end(sig: Signature, task: str, *args: Any) -> bool:
    return (sig.task == task and tuple(sig.args) == args and sig.options["queue"] == CONTROL_QUEUE
            and sig.options["routing_key"] == CONTROL_QUEUE and sig.immutable)


def test_a_step_is_one_immutable_execute_action_on_its_platform_queue():
    s = spec({"id": "hook", "platform": "webhook", "action": "post", "params": {"url": HOOK, "json": {"n": 1}},
              "max_attempts": 9}, step("tell", "hook"))
    sig = step_signature(WF, s, "hook", "act-hook", "critical", 4)
    assert sig.task == "opsq.execute_action" and sig.immutable and sig.args == ()
    assert sig.kwargs == {"action_id": "act-hook", "platform": "webhook", "action": "post",
                          "params": {"url": HOOK, "json": {"n": 1}},  # the real URL: the call needs it
                          "max_attempts": 9, "idempotency_key": None, "fail_fast": False,
                          "step": {"workflow_id": WF, "step_id": "hook", "action_id": "act-hook"}}
    assert sig.options["task_id"] == "act-hook"  # the action id is the Celery task id
    assert (sig.options["queue"], sig.options["routing_key"]) == ("webhook", "webhook")
    assert sig.options["priority"] == priority_value("critical") == 0
    assert "SECRETPATH" not in sig.options["kwargsrepr"]  # what logs and Flower show
    assert "https://hooks.example.com/[redacted]" in sig.options["kwargsrepr"]
    (on_error,) = sig.options["link_error"]
    assert on_error["task"] == "opsq.workflow.step_failed"
    assert on_error["kwargs"] == {"workflow_id": WF, "step_id": "hook"} and not on_error["immutable"]
    # A step without its own max_attempts gets the workflow's.
    assert step_signature(WF, s, "tell", "act-tell", "low", 4).kwargs["max_attempts"] == 4


def test_a_sequence_becomes_one_chain_ending_with_complete():
    canvas = compiled(spec(step("a"), step("b", "a"), step("c", "b")), priority="high")
    assert kind(canvas) == "chain"
    *steps, end = canvas.tasks
    assert [step_of(t) for t in steps] == ["a", "b", "c"]
    assert [kind(t) for t in canvas.tasks] == ["signature"] * 4
    assert all(t.options["priority"] == priority_value("high") for t in steps)
    assert is_end(end, "opsq.workflow.complete", WF)


def test_parallel_steps_become_a_group_and_what_follows_them_a_chord():
    fan_out = compiled(spec(step("a"), step("b"), step("c")))  # three independent steps
    assert kind(fan_out) == "chord"  # group | complete: complete waits for the whole group
    assert [step_of(t) for t in fan_out.tasks] == ["a", "b", "c"]
    assert is_end(fan_out.body, "opsq.workflow.complete", WF)
    # Parallel steps after a first one: the chain goes on as a chord.
    canvas = compiled(spec(step("a"), step("b", "a"), step("c", "a")))
    assert kind(canvas) == "chain" and [kind(t) for t in canvas.tasks] == ["signature", "chord"]
    assert [step_of(t) for t in canvas.tasks[1].tasks] == ["b", "c"]


def test_a_diamond_is_a_step_then_a_chord_whose_body_runs_the_fan_in_step():
    canvas = compiled(spec(step("scan"), step("compliance", "scan"), step("review", "scan"),
                           step("notify", "compliance", "review")))
    assert kind(canvas) == "chain"
    first, fan_in = canvas.tasks
    assert step_of(first) == "scan"
    assert kind(fan_in) == "chord"
    assert [step_of(t) for t in fan_in.tasks] == ["compliance", "review"]
    assert kind(fan_in.body) == "chain"  # notify, then complete, once both branches are done
    notify, end = fan_in.body.tasks
    assert step_of(notify) == "notify" and is_end(end, "opsq.workflow.complete", WF)


def test_an_approval_gate_ends_the_segment_with_a_pause_at_its_level():
    s = spec(step("a"), step("b", "a"), step("c", "b", requires_approval=True), step("d", "c"))
    plan = plan_segment(s, from_level=0, approved=False)
    assert plan == Plan([["a"], ["b"]], pauses_at=2) and plan.step_ids == ["a", "b"]
    canvas = compiled(s)
    assert [step_of(t) for t in canvas.tasks[:-1]] == ["a", "b"]
    assert is_end(canvas.tasks[-1], "opsq.workflow.pause", WF, 2)
    # Approved: the gated level runs, then the rest.
    assert plan_segment(s, from_level=2, approved=True) == Plan([["c"], ["d"]], pauses_at=None)
    resumed = compiled(s, from_level=2, approved=True)
    assert [step_of(t) for t in resumed.tasks[:-1]] == ["c", "d"]
    assert is_end(resumed.tasks[-1], "opsq.workflow.complete", WF)
    # Not approved yet, resumed from the gate: nothing runs, it pauses again.
    assert plan_segment(s, from_level=2, approved=False) == Plan([], pauses_at=2)


def test_a_gate_at_the_first_level_pauses_before_anything_runs():
    s = spec(step("a", requires_approval=True), step("b", "a"))
    assert plan_segment(s, from_level=0, approved=False) == Plan([], pauses_at=0)
    (only,) = compiled(s).tasks
    assert is_end(only, "opsq.workflow.pause", WF, 0)


def test_a_resumed_workflow_leaves_out_the_steps_already_done():
    s = spec(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))
    done = frozenset({"a", "b"})
    assert plan_segment(s, from_level=0, approved=False, done=done) == Plan([["c"], ["d"]], pauses_at=None)
    canvas = compiled(s, done=done)
    assert [step_of(t) for t in canvas.tasks[:-1]] == ["c", "d"]
    # A gate whose gated steps are all done no longer stops the workflow.
    gated = spec(step("a"), step("b", "a", requires_approval=True), step("c", "b"))
    assert plan_segment(gated, from_level=0, approved=False, done=frozenset({"a", "b"})) == Plan([["c"]], None)


@pytest.mark.parametrize("priority", ["critical", "high", "normal", "low"])
def test_every_step_carries_the_workflow_priority(priority):
    canvas = compiled(spec(step("a"), step("b", "a")), priority=priority)
    assert [t.options["priority"] for t in canvas.tasks[:-1]] == [priority_value(priority)] * 2


def _chain_spec(n: int, **gate: Any) -> WorkflowSpec:
    return spec(step("s0"), *(step(f"s{i}", f"s{i - 1}", **(gate if i == n - 2 else {})) for i in range(1, n)))


def test_a_long_chain_is_cut_into_segments_that_continue_where_they_stop():
    s = _chain_spec(7)
    first = plan_segment(s, from_level=0, approved=False, max_levels=3)
    assert first == Plan([["s0"], ["s1"], ["s2"]], pauses_at=None, continues_at=3)
    assert plan_segment(s, from_level=3, approved=False, max_levels=3) == Plan([["s3"], ["s4"], ["s5"]], None, 6)
    assert plan_segment(s, from_level=6, approved=False, max_levels=3) == Plan([["s6"]], None)
    # the segment's last task sends the next segment, with the submitter's max_attempts
    sig = compile_segment(WF, first, s, {x.id: f"act-{x.id}" for x in s.steps}, priority="normal", max_attempts=4)
    assert [step_of(t) for t in sig.tasks[:-1]] == ["s0", "s1", "s2"]
    assert is_end(sig.tasks[-1], "opsq.workflow.continue", WF, 3, 4)


def test_a_gate_ends_a_segment_before_the_cut_and_done_levels_do_not_count():
    s = _chain_spec(7, requires_approval=True)  # s5 needs approval
    assert plan_segment(s, from_level=3, approved=False, max_levels=3) == Plan([["s3"], ["s4"]], pauses_at=5)
    assert plan_segment(s, from_level=5, approved=True, max_levels=1) == Plan([["s5"]], None, continues_at=6)
    done = frozenset({"s0", "s1"})
    assert plan_segment(s, from_level=0, approved=False, done=done, max_levels=2) == Plan([["s2"], ["s3"]], None, 4)


def test_a_message_of_a_long_chain_carries_at_most_a_segment():
    s = _chain_spec(200)
    plan = plan_segment(s, from_level=0, approved=False, max_levels=50)
    sig = compile_segment(WF, plan, s, {x.id: f"act-{x.id}" for x in s.steps}, priority="normal", max_attempts=4)
    assert len(sig.tasks) == 51 and plan.continues_at == 50
