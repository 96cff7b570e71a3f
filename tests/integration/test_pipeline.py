"""The action pipeline end to end: client -> platform queue -> real worker process -> sandbox -> store."""

from __future__ import annotations

import pytest

from tests.support.wait import wait_for
from workers.client import submit_action
from workers.store import actions as store

pytestmark = pytest.mark.integration

ONE_PER_PLATFORM = [
    ("slack", "send_message", {"channel": "#ops", "text": "deploy done"}, "POST", "/slack/chat.postMessage"),
    ("notion", "create_task", {"database_id": "db1", "title": "Follow up"}, "POST", "/notion/v1/pages"),
    ("trello", "create_card", {"list_id": "list1", "name": "Card"}, "POST", "/trello/1/cards"),
    ("gdrive", "create_file", {"name": "invoice.pdf"}, "POST", "/gdrive/drive/v3/files"),
    ("gsheets", "append_row", {"sheet": "accounting", "values": ["A-1", 10]}, "POST", None),
    ("webhook", "post", None, "POST", "/webhook/hooks/deploy"),
]


def test_every_platform_travels_to_its_queue_worker_and_sandbox(opsq_env, workers_started, sandbox,
                                                                sandbox_client, database_url):
    workers_started(opsq_env())
    handles = []
    for platform, action, params, _, _ in ONE_PER_PLATFORM:
        if params is None:
            params = {"url": f"{sandbox.url}/webhook/hooks/deploy", "json": {"deploy": 42}}
        handles.append(submit_action(platform, action, params, priority="high"))
    for handle, (platform, _action, _params, method, path) in zip(handles, ONE_PER_PLATFORM, strict=True):
        view = handle.wait(30)
        assert view.status == "succeeded", view
        assert view.queue == platform
        assert view.attempts == 1
        assert view.result
        calls = sandbox_client.requests(platform=platform)
        assert len(calls) == 1, calls
        assert calls[0]["method"] == method
        if path:
            assert calls[0]["path"] == path
        else:
            assert calls[0]["path"].startswith("/gsheets/v4/spreadsheets/") and ":append" in calls[0]["path"]
        assert calls[0]["status"] == 200
    slack_call = sandbox_client.requests(platform="slack")[0]
    assert slack_call["body"]["channel"] == "#ops" and slack_call["body"]["text"] == "deploy done"
    state = sandbox_client.state()
    assert len(state["trello"]["cards"]) == 1
    assert len(state["gdrive"]["files"]) == 1


def test_actions_are_routed_to_their_platform_queue_only(opsq_env_sqlite, workers_started, redis_client,
                                                        sandbox_client):
    """A worker that consumes only `slack` runs the slack action; the notion one waits in `notion`."""
    workers_started(opsq_env_sqlite(), queues="slack")
    slack = submit_action("slack", "send_message", {"channel": "#a", "text": "hi"})
    notion = submit_action("notion", "create_task", {"database_id": "d", "title": "t"})
    assert slack.wait(20).status == "succeeded"
    assert notion.status().status == "queued"
    assert redis_client.llen("notion") + sum(redis_client.llen(f"notion\x06\x16{p}") for p in (3, 6, 9)) == 1
    assert sandbox_client.requests(platform="notion") == []


def test_critical_overtakes_queued_low_actions(opsq_env_sqlite, workers_started, sandbox_client):
    for i in range(8):
        submit_action("slack", "send_message", {"channel": "#bulk", "text": f"low {i}"}, priority="low")
    critical = submit_action("slack", "send_message", {"channel": "#page", "text": "CRITICAL"},
                             priority="critical")
    workers_started(opsq_env_sqlite(), queues="slack", concurrency=1)
    assert critical.wait(30).status == "succeeded"
    wait_for(lambda: len(sandbox_client.requests(platform="slack")) == 9, 30, "all 9 messages")
    texts = [r["body"]["text"] for r in sandbox_client.requests(platform="slack")]
    assert texts[0] == "CRITICAL", texts
    assert texts[1:] == [f"low {i}" for i in range(8)]


def test_503_twice_then_success_on_third_attempt(opsq_env, workers_started, sandbox_client):
    workers_started(opsq_env())
    sandbox_client.fault("trello", "error", status=503, times=2)
    view = submit_action("trello", "create_card", {"list_id": "l", "name": "retry me"}).wait(30)
    assert view.status == "succeeded"
    assert view.attempts == 3
    statuses = [r["status"] for r in sandbox_client.requests(platform="trello")]
    assert statuses == [503, 503, 200]


def test_429_is_not_retried_before_retry_after(opsq_env_sqlite, workers_started, sandbox_client):
    workers_started(opsq_env_sqlite())
    sandbox_client.fault("notion", "rate_limit", retry_after=2, times=1)
    view = submit_action("notion", "create_task", {"database_id": "d", "title": "t"}).wait(30)
    assert view.status == "succeeded" and view.attempts == 2
    first, second = sandbox_client.requests(platform="notion")
    assert first["status"] == 429 and second["status"] == 200
    assert second["started"] - first["finished"] >= 2.0


def test_400_fails_at_once_without_retry(opsq_env_sqlite, workers_started, sandbox_client):
    workers_started(opsq_env_sqlite())
    sandbox_client.fault("gdrive", "error", status=400, times=1)
    view = submit_action("gdrive", "create_file", {"name": "x"}).wait(30)
    assert view.status == "failed" and view.attempts == 1
    assert view.error_kind == "permanent"
    assert len(sandbox_client.requests(platform="gdrive")) == 1
    assert store.dead_letters() == []


def test_401_fails_at_once_as_auth_error(opsq_env_sqlite, workers_started, sandbox_client):
    workers_started(opsq_env_sqlite())
    sandbox_client.fault("trello", "auth", times=1)
    view = submit_action("trello", "create_card", {"list_id": "l", "name": "n"}).wait(30)
    assert view.status == "failed" and view.attempts == 1
    assert view.error_kind == "auth"
    assert len(sandbox_client.requests(platform="trello")) == 1


def test_slack_invalid_auth_is_an_auth_error(opsq_env_sqlite, workers_started, sandbox_client):
    workers_started(opsq_env_sqlite(OPSQ_SLACK_TOKEN="invalid"))
    view = submit_action("slack", "send_message", {"channel": "#a", "text": "x"}).wait(30)
    assert view.status == "failed" and view.error_kind == "auth"
    assert "invalid_auth" in (view.error or "")
    assert "invalid" not in str(view.result)


def test_worker_killed_mid_action_loses_no_message(opsq_env_sqlite, workers_started, sandbox_client):
    env = opsq_env_sqlite(OPSQ_VISIBILITY_TIMEOUT_S="3", OPSQ_IDEMPOTENCY_LEASE_S="3")
    first = workers_started(env, queues="gdrive", concurrency=1)
    sandbox_client.fault("gdrive", "ok", latency_ms=3000, times=1)
    handle = submit_action("gdrive", "create_file", {"name": "survivor.txt"})
    wait_for(lambda: sandbox_client.requests(platform="gdrive"), 20, "the call to reach the sandbox")
    assert handle.status().status == "running"
    first.kill()
    workers_started(env, queues="gdrive", concurrency=1)
    view = handle.wait(40)
    assert view.status == "succeeded"
    calls = sandbox_client.requests(platform="gdrive")
    # Killed while the platform was answering, so nothing recorded an outcome: once the visibility
    # timeout and the running lease pass, the redelivered message runs it (at-least-once). The
    # guards' tests cover a kill after the outcome was recorded (no second call).
    assert len(calls) == 2
