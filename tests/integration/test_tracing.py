"""OpenTelemetry traces (issue 13, item 2): real worker processes and a real CLI process with OPSQ_TRACING on
export over OTLP/HTTP to a local receiver that decodes the protobuf (tests/support/otlp_receiver.py). One action
is one trace from the submit to the platform's HTTP call; a workflow that rolls back is one trace with its
steps and its compensations; no secret is in any attribute."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.otlp_receiver import Receiver, Span
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def traced(opsq_env, receiver: Receiver, **more: str) -> dict[str, str]:
    return opsq_env(OPSQ_TRACING="true", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
                    **more)


def by_id(spans: list[Span]) -> dict[str, Span]:
    return {s.span_id: s for s in spans}


def ancestors(span: Span, index: dict[str, Span]) -> list[str]:
    names, current = [], span
    while current.parent_id and current.parent_id in index:
        current = index[current.parent_id]
        names.append(current.name)
    return names


def no_secret_in(spans: list[Span], env: dict[str, str]) -> None:
    secrets = [v for k, v in env.items() if k.endswith(("_TOKEN", "_API_KEY", "_PASSWORD")) and v]
    for s in spans:
        for key, value in s.attributes.items():
            assert not any(secret in str(value) for secret in secrets), (s.name, key, value)


def test_one_action_is_one_trace_from_the_submit_to_the_platform_call(opsq_env_sqlite, workers_started, receiver):
    # SQLite only, as below: what is traced does not depend on the store's kind.
    env = traced(opsq_env_sqlite, receiver)
    workers_started(env, queues="slack")
    out = opsq(env, "submit", "slack", "send_message", "-p", "channel=#traces", "-p", "text=hello", "--wait",
               "--json")
    assert out.returncode == 0, out.stderr
    action_id = json.loads(out.stdout)["id"]

    def attempt() -> Span | None:
        return next((s for s in receiver.all() if s.name == "opsq.attempt"
                     and s.attributes.get("opsq.action_id") == action_id), None)

    wait_for(lambda: attempt() is not None, timeout=30, what="the attempt's span")
    found = attempt()
    assert found is not None
    wait_for(lambda: any(s.parent_id == found.span_id for s in receiver.all()), timeout=30,
             what="the platform call's span")
    spans = [s for s in receiver.all() if s.trace_id == found.trace_id]
    index = by_id(spans)
    submit = next(s for s in spans if s.name == "opsq.submit")
    assert submit.service == "opsqueue-client" and submit.attributes["opsq.action_id"] == action_id
    assert found.service == "opsqueue-worker"
    assert found.attributes["opsq.outcome"] == "succeeded" and found.attributes["opsq.platform"] == "slack"
    (http,) = [s for s in spans if s.parent_id == found.span_id]
    assert http.name.startswith("POST")
    # The call inside the attempt, inside the task's run, inside the publish, inside the submit: one trace.
    chain = ancestors(http, index)
    assert chain[0] == "opsq.attempt" and chain[-1] == "opsq.submit", chain
    assert any(name.startswith("run/") for name in chain) and any(name.startswith("apply_async/") for name in chain)
    url = http.attributes.get("url.full") or http.attributes.get("http.url")
    assert url and "/api/" not in url  # cut to scheme://host
    no_secret_in(spans, env)


def test_a_workflow_and_its_rollback_are_one_trace(opsq_env_sqlite, workers_started, sandbox_client, receiver,
                                                   tmp_path: Path):
    env = traced(opsq_env_sqlite, receiver)
    sandbox_client.fault("notion", mode="auth")  # the third step fails for good: the first two are undone
    workers_started(env)
    spec = tmp_path / "traced.yaml"
    spec.write_text(json.dumps({"name": "traced", "steps": [
        {"id": "a", "platform": "slack", "action": "send_message", "params": {"channel": "#t", "text": "a"}},
        {"id": "b", "platform": "slack", "action": "send_message", "params": {"channel": "#t", "text": "b"},
         "depends_on": ["a"]},
        {"id": "c", "platform": "notion", "action": "create_task", "params": {"database_id": "d", "title": "c"},
         "depends_on": ["b"]}]}))
    out = opsq(env, "workflow", "run", str(spec), "--wait", "--json")
    assert json.loads(out.stdout)["status"] == "rolled_back", out.stdout + out.stderr
    workflow_id = json.loads(out.stdout)["id"]

    def spans_of_the_workflow() -> list[Span]:
        spans = receiver.all()
        root = next((s for s in spans if s.name == "opsq.workflow.submit"
                     and s.attributes.get("opsq.workflow_id") == workflow_id), None)
        return [s for s in spans if root is not None and s.trace_id == root.trace_id]

    def complete() -> bool:
        attempts = [s for s in spans_of_the_workflow() if s.name == "opsq.attempt"]
        return (sum(1 for s in attempts if s.attributes.get("opsq.role") == "action") >= 3
                and sum(1 for s in attempts if s.attributes.get("opsq.role") == "compensation") >= 2)

    wait_for(complete, timeout=60, what="the steps' and the compensations' spans in the workflow's trace")
    spans = spans_of_the_workflow()
    attempts = [s for s in spans if s.name == "opsq.attempt"]
    steps = {s.attributes["opsq.platform"]: s.attributes["opsq.outcome"] for s in attempts
             if s.attributes.get("opsq.role") == "action"}
    assert steps == {"slack": "succeeded", "notion": "failed"}
    undone = [s for s in attempts if s.attributes.get("opsq.role") == "compensation"]
    assert {s.attributes["opsq.outcome"] for s in undone} == {"succeeded"} and len(undone) == 2
    # Every attempt's HTTP call is a child of its attempt.
    for a in attempts:
        assert any(s.parent_id == a.span_id for s in spans), a.attributes
    no_secret_in(spans, env)
