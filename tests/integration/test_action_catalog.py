"""Every example `opsq actions` lists works as printed: its `opsq submit` line through the real CLI and its
`submit_action(...)` call through the client, both through the real validation into the queue; and one all the
way through a real worker to the sandbox."""

from __future__ import annotations

import json
import shlex

import pytest

from executors.registry import EXECUTORS
from tests.integration.opsq_cli import opsq
from workers.client import ActionHandle, submit_action
from workers.redaction import redact

pytestmark = pytest.mark.integration


def _listed(env) -> list[dict]:
    out = opsq(env, "actions", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert {(d["platform"], d["action"]) for d in listed} == {(p, a) for p, c in EXECUTORS.items() for a in c.actions}
    return listed


def test_every_listed_example_submits_as_printed(opsq_env_sqlite):
    env = opsq_env_sqlite()
    for entry in _listed(env):
        words = shlex.split(entry["submit"])
        assert words[:2] == ["opsq", "submit"]
        out = opsq(env, *words[1:], "--json")
        assert out.returncode == 0, (entry["submit"], out.stderr)
        first = json.loads(out.stdout)
        assert first["status"] == "queued", entry["submit"]
        view = ActionHandle(first["id"]).status()
        # The params the line carried are the example's, as typed (stored as every record is: URLs redacted).
        assert view.params == redact(entry["example"], urls=True)
        handle = eval(entry["python"], {"submit_action": submit_action})  # the listing's own text, run as printed
        assert handle.status().status == "queued", entry["python"]


def test_an_example_runs_through_a_worker_against_the_sandbox(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite()
    workers_started(env, queues="slack")
    out = opsq(env, "actions", "slack", "send_message", "--json")
    entry = json.loads(out.stdout)
    words = shlex.split(entry["submit"])
    done = opsq(env, *words[1:], "--wait", "--timeout", "30", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    (posted,) = [r for r in sandbox_client.requests("slack") if r["path"].endswith("chat.postMessage")]
    assert {k: posted["body"][k] for k in ("channel", "text")} == entry["example"], posted
