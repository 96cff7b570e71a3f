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

    # The worker's log: one JSON object per line, with the action's ids, and no secrets.
    log_text = worker.log_path.read_text()
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert any(" ready." in r["message"] for r in records)
    failed = [r for r in records if r.get("action_id") == handle.id and r["level"] == "ERROR"]
    assert failed, log_text[-3000:]
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
