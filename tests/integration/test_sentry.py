"""Sentry from a real worker process to a local stand-in for Sentry's ingest API, secrets scrubbed; and the
worker's JSON log lines."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.wait import wait_for
from workers.client import submit_action

pytestmark = pytest.mark.integration

SECRETS = ("hunter2", "s3cr3t-token", "xoxb-super-secret-123")


class FakeSentry:
    """Records what the SDK POSTs to /api/<project>/envelope/ (and the legacy /store/)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                elif encoding == "br":
                    import brotli  # noqa: PLC0415 - optional: only if the SDK found it installed

                    raw = brotli.decompress(raw)
                with outer.lock:
                    outer.paths.append(self.path)
                    outer.bodies.append(raw)
                body = b'{"id": "0"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        """Every event (envelope items of type "event", or /store/ bodies) received so far."""
        found = []
        with self.lock:
            received = list(zip(self.paths, self.bodies, strict=True))
        for path, body in received:
            if "/store/" in path:
                found.append(json.loads(body))
                continue
            lines = body.split(b"\n")
            i = 1  # line 0: the envelope header
            while i < len(lines):
                if not lines[i].strip():
                    i += 1
                    continue
                header = json.loads(lines[i])
                payload = lines[i + 1] if i + 1 < len(lines) else b""
                if header.get("type") == "event":
                    found.append(json.loads(payload))
                i += 2
        return found

    def raw(self) -> bytes:
        with self.lock:
            return b"\n".join(self.bodies)


@pytest.fixture
def fake_sentry():
    sentry = FakeSentry()
    sentry.thread.start()
    yield sentry
    sentry.server.shutdown()
    sentry.server.server_close()


def test_a_failed_action_reaches_sentry_tagged_and_scrubbed(opsq_env_sqlite, workers_started, sandbox,
                                                           sandbox_client, fake_sentry):
    env = opsq_env_sqlite(OPSQ_SENTRY_DSN=fake_sentry.dsn, OPSQ_SENTRY_ENVIRONMENT="test",
                          OPSQ_SLACK_TOKEN="xoxb-super-secret-123")
    worker = workers_started(env, queues="webhook,control", concurrency=2)
    sandbox_client.fault("webhook", "error", status=400)
    handle = submit_action("webhook", "post", {
        "url": f"{sandbox.url}/webhook/x",
        "json": {"password": "hunter2", "note": "sent with xoxb-super-secret-123"},
        "headers": {"Authorization": "Bearer s3cr3t-token"},
    })
    view = handle.wait(30)
    assert view.status in ("failed", "dead"), view
    # The sandbox did receive the secrets: they were there to leak.
    call = sandbox_client.requests(platform="webhook")[-1]
    assert "hunter2" in json.dumps(call)

    def our_event() -> dict[str, Any] | None:
        for event in fake_sentry.events():
            if event.get("tags", {}).get("action_id") == handle.id:
                return event
        return None

    event = wait_for(our_event, 30, "the action's error event at the fake Sentry", interval=0.2)
    assert event["tags"]["platform"] == "webhook"
    assert event["tags"]["action"] == "post"
    assert event["environment"] == "test"
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ActionFailed"
    assert exception["mechanism"]["type"] == "celery"
    # Frame variables are not sent at all: they hold params as repr() text that cannot be scrubbed
    # reliably (a webhook URL's secret path, a secret under an innocent name).
    frames = exception["stacktrace"]["frames"]
    assert any(f.get("function") == "execute_action" for f in frames)
    assert not any("vars" in f for f in frames)

    raw = fake_sentry.raw()
    for secret in SECRETS:
        assert secret.encode() not in raw, f"{secret} reached Sentry"
    # One report for the failure: the "action failed for good" log line is not a second event.
    mine = [e for e in fake_sentry.events() if e.get("tags", {}).get("action_id") == handle.id]
    assert len(mine) == 1, [e.get("logentry") or e.get("exception") for e in mine]
    assert mine[0]["tags"]["celery_task_id"] == handle.id  # the task's Celery scope, as the integration's own

    # The worker's log: one JSON object per line, with the action's ids, and no secrets.
    log_text = worker.log_path.read_text()
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert any(" ready." in r["message"] for r in records)
    failed = [r for r in records if r.get("action_id") == handle.id and r["level"] == "ERROR"]
    assert len(failed) == 1, log_text[-3000:]  # ours; not Celery's "raised unexpected" besides (issue 16 item 6)
    assert "raised unexpected" not in log_text and "Traceback" not in log_text, log_text[-3000:]
    assert failed[0]["platform"] == "webhook" and failed[0]["action"] == "post" and failed[0]["attempt"] == 1
    assert failed[0]["logger"] == "opsq.action"
    assert failed[0]["task_id"] == handle.id and failed[0]["task_name"] == "opsq.execute_action"
    for secret in SECRETS:
        assert secret not in log_text


def test_worker_without_dsn_sends_nothing(opsq_env_sqlite, workers_started, sandbox, sandbox_client, fake_sentry):
    workers_started(opsq_env_sqlite(), queues="webhook")
    sandbox_client.fault("webhook", "error", status=400)
    view = submit_action("webhook", "post", {"url": f"{sandbox.url}/webhook/x", "json": {}}).wait(30)
    assert view.status in ("failed", "dead")
    assert fake_sentry.bodies == []


def _events_of(fake_sentry: FakeSentry, action_id: str) -> list[dict[str, Any]]:
    return [e for e in fake_sentry.events() if e.get("tags", {}).get("action_id") == action_id]


def _records(log_text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]


def test_retries_are_not_reported_and_running_out_of_them_is_reported_once(opsq_env_sqlite, workers_started,
                                                                            sandbox, sandbox_client, fake_sentry):
    env = opsq_env_sqlite(OPSQ_SENTRY_DSN=fake_sentry.dsn)
    workers_started(env, queues="webhook,control", concurrency=2)
    sandbox_client.fault("webhook", "error", status=503, times=1)  # refused once, then answered
    recovered = submit_action("webhook", "post", {"url": f"{sandbox.url}/webhook/x", "json": {}}, max_attempts=3)
    view = recovered.wait(30)
    assert view.status == "succeeded" and view.attempts == 2, view

    sandbox_client.fault("webhook", "error", status=503, times=3)  # refused on each of its 3 attempts
    exhausted = submit_action("webhook", "post", {"url": f"{sandbox.url}/webhook/x", "json": {}}, max_attempts=3)
    view = exhausted.wait(30)
    assert view.status in ("failed", "dead") and view.attempts == 3, view
    (event,) = wait_for(lambda: _events_of(fake_sentry, exhausted.id), 30, "the exhausted action's event",
                        interval=0.2)
    assert event["exception"]["values"][-1]["type"] == "ActionFailed"
    assert event["contexts"]["opsq"]["attempt"] == 3
    # The events a worker sends go out as they are captured, in order: the failure's arrived, so the retries'
    # (attempts 1 and 2 of each action, before it) would have too.
    assert _events_of(fake_sentry, exhausted.id) == [event]
    assert _events_of(fake_sentry, recovered.id) == []


def test_an_executor_crash_is_one_error_line_with_its_traceback_and_one_event(opsq_env_sqlite, workers_started,
                                                                             fake_sentry):
    env = opsq_env_sqlite(OPSQ_SENTRY_DSN=fake_sentry.dsn, OPSQ_TEST_CRASH="executor")
    worker = workers_started(env, queues="noop,control", app="tests.support.fault_app")
    handle = submit_action("noop", "noop", {"echo": "x"})
    view = handle.wait(30)
    assert view.status in ("failed", "dead") and view.error_kind == "internal", view

    (event,) = wait_for(lambda: _events_of(fake_sentry, handle.id), 30, "the crash's event", interval=0.2)
    # One event: the failure, chained to the executor's exception, whose frames say where the bug is.
    crash, failure = event["exception"]["values"]
    assert failure["type"] == "ActionFailed" and failure["mechanism"]["type"] == "celery"
    assert crash["type"] == "InjectedBug"
    assert any(f.get("function") == "execute" and "fault_app" in f.get("module", "")
               for f in crash["stacktrace"]["frames"])

    wait_for(lambda: "raised expected" in worker.log_path.read_text(errors="replace"), 15,
             "Celery's INFO line for the expected failure")
    log_text = worker.log_path.read_text(errors="replace")
    errors = [r for r in _records(log_text) if r["level"] == "ERROR"]
    assert len(errors) == 1, log_text[-3000:]
    assert errors[0]["message"].startswith("action crashed and failed for good (internal): InjectedBug")
    assert "Traceback" in errors[0]["exc_info"] and "planted by the test" in errors[0]["exc_info"]
    assert "raised unexpected" not in log_text
    assert _events_of(fake_sentry, handle.id) == [event]


def test_a_crash_of_the_task_keeps_celerys_traceback_and_is_one_event(opsq_env_sqlite, workers_started,
                                                                     fake_sentry):
    env = opsq_env_sqlite(OPSQ_SENTRY_DSN=fake_sentry.dsn, OPSQ_TEST_CRASH="task")
    worker = workers_started(env, queues="noop,control", app="tests.support.fault_app")
    handle = submit_action("noop", "noop", {"echo": "x"})

    (event,) = wait_for(lambda: _events_of(fake_sentry, handle.id), 30, "the crash's event", interval=0.2)
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "InjectedBug" and exception["mechanism"]["type"] == "celery"

    def celerys_line() -> dict[str, Any] | None:
        return next((r for r in _records(worker.log_path.read_text(errors="replace"))
                     if "raised unexpected" in r["message"]), None)

    line = wait_for(celerys_line, 15, "Celery's ERROR line for the crash")
    assert line["level"] == "ERROR" and "InjectedBug" in line["message"]
    assert "Traceback" in line["exc_info"] and "planted by the test" in line["exc_info"]
    assert _events_of(fake_sentry, handle.id) == [event]


def test_a_compensation_failing_for_good_is_one_error_line_and_one_event(opsq_env_sqlite, workers_started,
                                                                        sandbox_client, fake_sentry, tmp_path):
    env = opsq_env_sqlite(OPSQ_SENTRY_DSN=fake_sentry.dsn)
    worker = workers_started(env)
    sandbox_client.fault("notion", mode="auth")  # step b refused: the workflow rolls back
    sandbox_client.fault("slack", mode="auth", match="chat.delete")  # and step a's undo is refused too
    spec = tmp_path / "undo-fails.yaml"
    spec.write_text(json.dumps({"name": "undo-fails", "steps": [
        {"id": "a", "platform": "slack", "action": "send_message", "params": {"channel": "#t", "text": "a"}},
        {"id": "b", "platform": "notion", "action": "create_task", "params": {"database_id": "d", "title": "b"},
         "depends_on": ["a"]}]}))
    out = opsq(env, "workflow", "run", str(spec), "--wait", "--json")
    run = json.loads(out.stdout)
    assert run["status"] == "rollback_failed", out.stdout + out.stderr

    def undo_events() -> list[dict[str, Any]]:
        return [e for e in fake_sentry.events()
                if e.get("tags", {}).get("workflow_id") == run["id"] and "step_id" not in e.get("tags", {})]

    (event,) = wait_for(undo_events, 30, "the compensation's event", interval=0.2)
    assert event["exception"]["values"][-1]["type"] == "ActionFailed"
    assert event["extra"]["celery-job"]["task_name"] == "opsq.workflow.compensate"
    step_events = [e for e in fake_sentry.events() if e.get("tags", {}).get("step_id") == "b"]
    assert len(step_events) == 1  # step b's own failure: its own one event

    log_text = worker.log_path.read_text(errors="replace")
    errors = [r for r in _records(log_text) if r["level"] == "ERROR"]
    assert [r["message"].split(":")[0] for r in errors] == ["action failed for good (auth)",
                                                            "compensation failed for good (auth)"], log_text[-3000:]
    assert errors[1]["workflow_id"] == run["id"] and errors[1]["step_id"] == "a"
    assert "raised unexpected" not in log_text and "Traceback" not in log_text
    assert undo_events() == [event]
