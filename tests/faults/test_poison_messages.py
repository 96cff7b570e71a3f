"""Items on a queue that are not messages (issue 10, poison): each is pushed raw onto the `noop` queue's Redis
list while a real worker consumes it. The worker keeps its process (same PID, alive), quarantines each item
once, and runs valid actions afterwards; the items are never logged whole."""

from __future__ import annotations

import base64
import json

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.wait import wait_for
from workers.broker_transport import QUARANTINE_KEY, QUARANTINED_COUNT_KEY
from workers.client import submit_action

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-poison-body"  # must never reach the worker's log
VALID_PROPERTIES = {"delivery_tag": "x", "body_encoding": "base64", "delivery_info": {"exchange": "",
                                                                                     "routing_key": "noop"}}
POISON = {
    "not JSON": f"this is not json {SECRET}".encode(),
    "a JSON list": json.dumps([1, 2, SECRET]).encode(),
    "a JSON string": json.dumps(SECRET).encode(),
    "no body or properties": json.dumps({"hello": SECRET}).encode(),
    "a body that is not base64": json.dumps({"body": f"%%% not base64 {SECRET} %%%", "content-encoding": "utf-8",
                                             "content-type": "application/json", "headers": {},
                                             "properties": VALID_PROPERTIES}).encode(),
    "not UTF-8": b"\xff\xfe\xfa" + SECRET.encode(),
}


def test_a_worker_quarantines_items_that_are_not_messages_and_goes_on(opsq_env_sqlite, workers_started,
                                                                      redis_client):
    env = opsq_env_sqlite()
    worker = workers_started(env, queues="noop", concurrency=1)
    assert worker.proc is not None
    pid = worker.proc.pid
    assert submit_action("noop", "noop", {"echo": "before"}).wait(30).status == "succeeded"

    for raw in POISON.values():
        redis_client.lpush("noop", raw)
    wait_for(lambda: redis_client.llen(QUARANTINE_KEY) == len(POISON), timeout=30,
             what="every poison item quarantined")

    view = submit_action("noop", "noop", {"echo": "after"}).wait(30)
    assert view.status == "succeeded" and view.result == {"ok": True, "echo": "after"}
    assert worker.proc.poll() is None and worker.proc.pid == pid  # the same worker, still running
    assert "Unrecoverable error" not in worker.log()

    records = [json.loads(r) for r in redis_client.lrange(QUARANTINE_KEY, 0, -1)]
    assert len(records) == len(POISON) and int(redis_client.get(QUARANTINED_COUNT_KEY)) == len(POISON)
    assert {r["queue"] for r in records} == {"noop"}
    kept = {base64.b64decode(r["head"]) for r in records}
    assert kept == set(POISON.values())  # each item once, its bytes kept for the operator
    reasons = {r["reason"].split(" (")[0] for r in records}
    assert {"not JSON", "a JSON list, not a message object", "a JSON str, not a message object",
            "no body or properties: not a kombu message", "a body that is not the base64 it claims"} <= reasons
    assert worker.log().count("quarantined a message from queue noop") == len(POISON)
    assert SECRET not in worker.log()
    assert redis_client.llen("noop") == 0

    # The operator's side: listed, alerted on, dropped (audited).
    listed = opsq(env, "queue", "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["counts"] == {"kept": len(POISON), "total": len(POISON)}
    assert SECRET not in opsq(env, "queue", "quarantine", "list").stdout
    assert opsq(env, "maintenance", "run", "evaluate_alerts").returncode == 0
    alerts = json.loads(opsq(env, "alerts", "list", "--json").stdout)
    assert [a["key"] for a in alerts if a["kind"] == "quarantine"] == ["quarantine"]
    assert opsq(env, "queue", "quarantine", "drop").returncode != 0  # needs --yes
    dropped = opsq(env, "queue", "quarantine", "drop", "--yes", "--actor", "oncall")
    assert dropped.returncode == 0 and f"dropped {len(POISON)}" in dropped.stdout
    assert redis_client.llen(QUARANTINE_KEY) == 0
    trail = json.loads(opsq(env, "audit", "list", "--action", "quarantine_drop", "--json").stdout)
    assert [(e["actor"], e["detail"]) for e in trail] == [("oncall", {"dropped": len(POISON)})]
