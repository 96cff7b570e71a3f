"""Items on a queue that are not messages (issue 10, poison): each is pushed raw onto the `noop` queue's Redis
list while a real worker consumes it. The worker keeps its process (same PID, alive), quarantines each item
once, and runs valid actions afterwards; the items are never logged whole."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.wait import wait_for
from workers.broker_transport import QUARANTINE_KEY, QUARANTINED_COUNT_KEY
from workers.celery_app import EXECUTE_ACTION, app
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


# Messages that ARE kombu messages but cannot be run (workers.consumer). Each is built by kombu itself (Celery's
# send_task onto a queue nobody consumes), taken off that list, altered, and pushed raw onto `noop`.
HOLD = "poison-template"
BIG = 1_048_576 + 4096  # params over the default OPSQ_MAX_PARAMS_BYTES (1 MiB)


def _valid_kwargs(**over: object) -> dict[str, object]:
    kwargs: dict[str, object] = {"action_id": uuid.uuid4().hex, "platform": "noop", "action": "noop",
                                 "params": {"echo": SECRET}, "max_attempts": 3, "idempotency_key": None,
                                 "fail_fast": False}
    kwargs.update(over)
    return {k: v for k, v in kwargs.items() if v is not DROP}


DROP = object()


def _built(redis_client, name: str, kwargs: dict[str, object], task_id: str, **options: object) -> dict:
    """The queue item kombu writes for this send_task (its JSON envelope), taken off the holding queue."""
    app.send_task(name, kwargs=kwargs, task_id=task_id, queue=HOLD, routing_key=HOLD, priority=0, **options)
    raw = redis_client.rpop(HOLD)
    assert raw is not None, "kombu wrote the message elsewhere"
    envelope = json.loads(raw)
    envelope["properties"]["delivery_info"]["routing_key"] = "noop"  # as if sent to noop
    return envelope


def _poison_messages(redis_client) -> dict[str, tuple[dict, str, bool]]:
    """case -> (the envelope, what its quarantine reason says, whether it may be requeued)."""
    out: dict[str, tuple[dict, str, bool]] = {}
    out["unknown task"] = (_built(redis_client, "opsq.no_such_task", {"secret": SECRET}, "p-unknown"),
                           "unknown task 'opsq.no_such_task'", True)
    no_header = _built(redis_client, EXECUTE_ACTION, _valid_kwargs(), "p-no-header")
    del no_header["headers"]["task"]
    out["no task header"] = (no_header, "no task header", False)
    pickled = _built(redis_client, EXECUTE_ACTION, _valid_kwargs(), "p-pickle", serializer="pickle")
    assert pickled["content-type"] == "application/x-python-serialize"
    out["pickle"] = (pickled, "content type 'application/x-python-serialize' is not accepted", False)
    out["missing kwargs"] = (_built(redis_client, EXECUTE_ACTION, _valid_kwargs(params=DROP, action_id=DROP),
                                    "p-missing"), "arguments that do not fit opsq.execute_action", True)
    out["wrong types"] = (_built(redis_client, EXECUTE_ACTION, _valid_kwargs(params=SECRET, max_attempts="five"),
                                 "p-types"), "arguments of the wrong type for opsq.execute_action: params", True)
    not_celery = _built(redis_client, EXECUTE_ACTION, _valid_kwargs(), "p-shape")
    not_celery["body"] = base64.b64encode(json.dumps({"secret": SECRET}).encode()).decode()
    out["body not [args, kwargs, embed]"] = (not_celery, "not Celery's [args, kwargs, embed]", False)
    kwargs_list = _built(redis_client, EXECUTE_ACTION, _valid_kwargs(), "p-kwargs-list")
    kwargs_list["body"] = base64.b64encode(json.dumps([[], [SECRET], {}]).encode()).decode()
    out["kwargs a list"] = (kwargs_list, "not Celery's [args, kwargs, embed]", False)
    out["oversized params"] = (_built(redis_client, EXECUTE_ACTION,
                                      _valid_kwargs(params={"blob": SECRET + "x" * BIG}), "p-big"),
                               "(OPSQ_MAX_PARAMS_BYTES)", False)  # too big to keep whole: not requeueable
    return out


def test_a_worker_quarantines_messages_it_cannot_run_once_and_goes_on(opsq_env_sqlite, workers_started,
                                                                       redis_client):
    env = opsq_env_sqlite()
    worker = workers_started(env, queues="noop", concurrency=1)
    assert worker.proc is not None
    pid = worker.proc.pid
    assert submit_action("noop", "noop", {"echo": "before"}).wait(30).status == "succeeded"

    cases = _poison_messages(redis_client)
    for envelope, _, _ in cases.values():
        redis_client.lpush("noop", json.dumps(envelope))
    wait_for(lambda: redis_client.llen(QUARANTINE_KEY) >= len(cases), timeout=30,
             what="every poison message quarantined")

    view = submit_action("noop", "noop", {"echo": "after"}).wait(30)
    assert view.status == "succeeded" and view.result == {"ok": True, "echo": "after"}
    assert worker.proc.poll() is None and worker.proc.pid == pid  # the same worker, still running

    records = [json.loads(r) for r in redis_client.lrange(QUARANTINE_KEY, 0, -1)]
    assert len(records) == len(cases) and int(redis_client.get(QUARANTINED_COUNT_KEY)) == len(cases)  # once each
    by_id = {r["id"]: r for r in records}
    for case, (envelope, reason, requeueable) in cases.items():
        record = by_id[envelope["headers"]["id"]]
        assert reason in record["reason"], (case, record["reason"])
        assert record["queue"] == "noop" and record["stage"] == "consumer"
        assert record["requeueable"] is requeueable, case
        assert ("message" in record) is (case != "oversized params"), case
    # Acknowledged: nothing left to deliver again, nothing held unacknowledged.
    assert redis_client.llen("noop") == 0
    wait_for(lambda: redis_client.hlen("unacked") == 0, timeout=10, what="no unacknowledged message left")

    log = worker.log_path.read_text(errors="replace")  # the whole log, not its tail
    assert "Unrecoverable error" not in log
    assert log.count("quarantined a message from queue noop that cannot be run") == len(cases)
    assert SECRET not in log
    assert "raised unexpected" not in log  # nothing reached the pool as a task that fails


def test_a_quarantined_message_is_requeued_once_its_consumer_can_run_it(opsq_env_sqlite, workers_started,
                                                                        redis_client):
    """A worker whose params limit is lower than the client's quarantines a real action; a worker with the
    usual limit runs it once it is requeued. Items that are not valid messages stay, each refused in a line."""
    env = opsq_env_sqlite()
    strict = workers_started({**env, "OPSQ_MAX_PARAMS_BYTES": "2048"}, queues="noop", concurrency=1)
    handle = submit_action("noop", "noop", {"echo": "y" * 3000})
    redis_client.lpush("noop", b"not a message " + SECRET.encode())
    wait_for(lambda: redis_client.llen(QUARANTINE_KEY) == 2, timeout=30, what="both quarantined")
    strict.stop()

    listed = opsq(env, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "2 quarantined queue items: opsq queue quarantine list" in listed.stdout
    shown = opsq(env, "queue", "quarantine", "list")
    assert "REQUEUE" in shown.stdout and SECRET not in shown.stdout

    assert opsq(env, "queue", "quarantine", "requeue", "--all").returncode != 0  # needs --yes
    nothing = opsq(env, "queue", "quarantine", "requeue", "--yes")
    assert nothing.returncode != 0 and "Traceback" not in nothing.stderr  # an index or --all
    beyond = opsq(env, "queue", "quarantine", "requeue", "7", "--yes")
    assert beyond.returncode != 0 and "no quarantined item 7" in beyond.stderr and "Traceback" not in beyond.stderr
    refused = opsq(env, "queue", "quarantine", "requeue", "0", "--yes")  # the newest: not a message
    assert refused.returncode != 0 and "cannot be requeued" in refused.stderr, refused.stderr

    done = opsq(env, "queue", "quarantine", "requeue", "--all", "--yes", "--actor", "oncall")
    assert done.returncode == 0, done.stderr
    assert "requeued 1 quarantined message(s)" in done.stdout and "1 left" in done.stdout
    assert redis_client.llen(QUARANTINE_KEY) == 1
    assert json.loads(redis_client.lindex(QUARANTINE_KEY, 0))["reason"].startswith("not JSON")

    workers_started(env, queues="noop", concurrency=1)
    view = handle.wait(30)
    assert view.status == "succeeded" and view.result == {"ok": True, "echo": "y" * 3000}
    trail = json.loads(opsq(env, "audit", "list", "--action", "quarantine_requeue", "--json").stdout)
    assert [(e["actor"], [m["id"] for m in e["detail"]["requeued"]]) for e in trail] == [("oncall", [handle.id])]
    again = opsq(env, "queue", "quarantine", "requeue", "--all", "--yes")
    assert again.returncode == 0 and "requeued 0" in again.stdout
    assert len(json.loads(opsq(env, "audit", "list", "--action", "quarantine_requeue", "--json").stdout)) == 1
