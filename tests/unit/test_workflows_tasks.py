"""workflows.tasks' step hooks against a SQLite store, driven directly (no worker): a step's bookkeeping
(prepare, started, succeeded) asks the database the same at step 5 of a 10-step chain and at steps 5 and 500
of a 520-step one (issue 10), and renders the same params as when it read every output and the whole spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from workers.settings import reload_settings
from workers.store import db
from workflows import state
from workflows.spec import WorkflowSpec, load, validate
from workflows.status import WorkflowStatus
from workflows.tasks import SpecCache, WorkflowStepHooks, spec_of
from workflows.templates import TemplateError

N = 520


def _chain(n: int, input_: dict[str, Any] | None = None) -> WorkflowSpec:
    """s0 -> s1 -> ... ; each step echoes the one before it (a whole template keeps the value's type) and
    names it in a string (templates inside text), with an input."""
    steps: list[dict[str, Any]] = [{"id": "s0", "platform": "noop", "action": "noop",
                                    "params": {"echo": {"value": 0, "note": "first"}}}]
    for i in range(1, n):
        prev = f"steps.s{i - 1}.output"
        steps.append({"id": f"s{i}", "platform": "noop", "action": "noop", "depends_on": [f"s{i - 1}"],
                      "params": {"echo": {"value": f"{{{{ {prev}.echo.value }}}}",
                                          "note": f"s{i}: after {{{{ {prev}.echo.value }}}} for {{{{ input.who }}}}"}}})
    return validate(load({"name": "chain", "input": input_ or {"who": "ops"}, "steps": steps}))


def _start(spec: WorkflowSpec, workflow_id: str) -> None:
    state.create_run(spec, dict(spec.input), "normal", workflow_id=workflow_id, idempotency_key=None,
                     created_by="test")
    state.transition(workflow_id, WorkflowStatus.RUNNING, allowed_from=(WorkflowStatus.PENDING,))
    state.queue_steps(workflow_id, [s.id for s in spec.steps], spec, 3)


def _use_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{path}")
    reload_settings()
    db.reset_engine()
    return db.get_engine()


class Meter:
    """What the database is asked while `on`: the statements, and the SQLite VM instructions they run.
    A statement that walks every row of the workflow (a MAX over its steps, every output) costs
    instructions per row, so it shows here even when the number of statements stays the same."""

    def __init__(self, engine: Engine) -> None:
        self.on = False
        self.statements: list[str] = []
        self.instructions = 0
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.on:
            self.statements.append(statement)
        conn.connection.driver_connection.set_progress_handler(self._tick if self.on else None, 1)

    def _tick(self) -> int:
        self.instructions += self.on
        return 0  # go on

    def measure(self, work: Any) -> tuple[list[str], int]:
        self.statements, self.instructions, self.on = [], 0, True
        try:
            work()
        finally:
            self.on = False
        return self.statements, self.instructions


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    yield _use_store(tmp_path / "t.db", monkeypatch)


def _bookkeeping(hooks: WorkflowStepHooks, workflow_id: str, spec: WorkflowSpec, i: int) -> dict[str, Any]:
    """What execute_action asks of the hooks for step i, with the noop action's output (its params)."""
    step = {"workflow_id": workflow_id, "step_id": f"s{i}"}
    params = hooks.begin(step, spec.step(f"s{i}").params, 1)
    assert params is not None
    hooks.succeeded(step, params, dict(params))
    return params


def _run_chain(engine: Engine, workflow_id: str, n: int, measured: tuple[int, ...]) -> dict[int, tuple[list[str], int]]:
    spec = _chain(n)
    _start(spec, workflow_id)
    hooks, meter = WorkflowStepHooks(), Meter(engine)
    seen: dict[int, tuple[list[str], int]] = {}
    for i in range(n):
        if i in measured:
            seen[i] = meter.measure(lambda i=i: _bookkeeping(hooks, workflow_id, spec, i))
        else:
            _bookkeeping(hooks, workflow_id, spec, i)
    return seen


def test_a_steps_bookkeeping_does_not_grow_with_the_workflows_length(engine):
    short = _run_chain(engine, "short", 10, (5,))
    long = _run_chain(engine, "long", N, (5, 500))
    (base, base_ops), (early, early_ops), (late, late_ops) = short[5], long[5], long[500]
    assert len(base) == len(early) == len(late), (base, late)
    # The spec grows with the workflow: read (and parsed) once per workflow and process, not per step.
    assert not [s for s in base + early + late if "workflow_runs.spec" in s]
    # Lookups by key and index only. Walking the workflow's steps (a MAX over them, every earlier output) cost
    # about 6000 instructions at step 5 of 520 and 7500 at step 500 (420 at step 5 of 10); now about 320 each.
    for ops in (early_ops, late_ops):
        assert ops <= base_ops * 1.1 + 20, (base_ops, early_ops, late_ops)
    # ... doing the same work: every template rendered from the step before it, completions numbered in order.
    steps = {s["step_id"]: s for s in state.steps("long")}
    assert steps[f"s{N - 1}"]["params"] == {"echo": {"value": 0, "note": f"s{N - 1}: after 0 for ops"}}
    assert [steps[f"s{i}"]["completed_seq"] for i in range(N)] == list(range(1, N + 1))


def test_a_template_naming_a_step_with_no_output_fails_as_before(engine):
    spec = _chain(3)
    _start(spec, "early")
    with pytest.raises(TemplateError, match=r"nothing at steps\.s0"):
        WorkflowStepHooks().begin({"workflow_id": "early", "step_id": "s1"}, spec.step("s1").params, 1)


def test_a_workflow_id_seen_again_in_another_store_gets_its_own_spec(tmp_path, monkeypatch):
    """The parsed spec is kept per process; a run with the same id elsewhere (a restored backup of another
    store, another test database) is another run, with its own spec."""
    for n, store in ((3, "a.db"), (4, "b.db")):
        _use_store(tmp_path / store, monkeypatch)
        _start(_chain(n), "same-id")
        assert len(spec_of("same-id")[0].steps) == n


def test_the_spec_cache_is_bounded_by_the_specs_size_and_number():
    loads: list[str] = []

    def loader(n: int, key: str) -> Any:
        def load() -> dict[str, Any]:
            loads.append(key)
            return _chain(n).model_dump(mode="json")
        return load

    one = len(json.dumps(_chain(3).model_dump(mode="json"), separators=(",", ":")))
    cache = SpecCache(max_bytes=2 * one, max_items=64)
    for key in ("a", "b", "a", "c", "a"):  # c pushes out b (least recently used), never a
        cache.get(key, loader(3, key))
    assert loads == ["a", "b", "c"] and len(cache) == 2
    cache.get("big", loader(40, "big"))
    cache.get("big", loader(40, "big"))  # larger than the whole budget: parsed each time, kept never
    assert loads[-2:] == ["big", "big"] and len(cache) == 2
    few = SpecCache(max_items=1)
    few.get("a", loader(3, "a"))
    few.get("b", loader(3, "b"))
    assert len(few) == 1


def test_a_message_of_the_steps_old_action_claims_nothing_after_a_retry(engine):
    """A retried workflow runs its failed step as a new action: a message of the old one (redelivered late)
    must not run the step beside it, nor pass for its success."""
    spec = _chain(2)
    _start(spec, "wf")
    hooks = WorkflowStepHooks()
    old = {s["step_id"]: s["action_id"] for s in state.steps("wf")}
    _bookkeeping(hooks, "wf", spec, 0)
    state.step_failed("wf", "s1", "[auth] refused")
    assert state.transition("wf", WorkflowStatus.FAILED, allowed_from=(WorkflowStatus.RUNNING,))
    renewed = state.retry_failed("wf", ["s1"], detail="test", audit_as=("workflow_retry", "workflow:wf", {}, "t"))
    assert renewed is not None and renewed["s1"] != old["s1"]
    assert state.retry_failed("wf", ["s1"], detail="again", audit_as=("workflow_retry", "wf", {}, "t")) is None
    state.queue_steps("wf", ["s1"], spec, 3)
    params = spec.step("s1").params
    assert hooks.begin({"workflow_id": "wf", "step_id": "s1", "action_id": old["s1"]}, params, 2) is None
    assert hooks.begin({"workflow_id": "wf", "step_id": "s1", "action_id": renewed["s1"]}, params, 1) is not None
    hooks.succeeded({"workflow_id": "wf", "step_id": "s1"}, params, {"ok": True})
    assert hooks.begin({"workflow_id": "wf", "step_id": "s1", "action_id": old["s1"]}, params, 2) is None
    assert hooks.begin({"workflow_id": "wf", "step_id": "s1"}, params, 2) is not None  # older messages: as before
