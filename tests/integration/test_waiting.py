"""Waiting for outcomes is pushed, not polled (workers.waiting; issue 12), on real Redis, a real store and real
worker processes. Most tests push the fallback poll out of reach (FALLBACK_MIN_S/MAX_S set to minutes), so a
wait that returns at all was woken by the notification; the fallback itself is shown where nothing publishes.
Waiting is Redis' business: the tests that read the store in a way that could differ by its kind (a failure
read from it, the count of reads) run on both SQLite and PostgreSQL, the rest on SQLite (CI time)."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from sqlalchemy import event, select

from tests.support.wait import wait_for
from workers import waiting
from workers.client import ActionHandle, current_status, submit_action, wait_all
from workers.guards.connection import as_text, guard_redis
from workers.store import actions as store
from workers.store.actions import ActionView
from workers.store.db import get_engine
from workers.store.models import ActionRun
from workflows import state as workflow_state
from workflows.client import approve, submit_workflow
from workflows.view import WorkflowView

pytestmark = pytest.mark.integration

NO_POLL_S = 600.0


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "FALLBACK_MIN_S", NO_POLL_S)
    monkeypatch.setattr(waiting, "FALLBACK_MAX_S", NO_POLL_S)


def db_status(action_id: str) -> str:
    with get_engine().connect() as conn:
        return str(conn.execute(select(ActionRun.status).where(ActionRun.id == action_id)).scalar_one())


def test_a_success_wakes_its_waiter_before_the_database_has_it(opsq_env_sqlite, workers_started, no_fallback):
    # The write-behind holds the success record for a minute: the waiter must not wait for it.
    workers_started(opsq_env_sqlite(OPSQ_OUTCOME_FLUSH_MS="60000"), queues="noop")
    view = submit_action("noop", "noop", {"echo": 7}).wait(30)
    assert view.status == "succeeded" and view.result == {"echo": 7, "ok": True} and view.finished_at is not None
    assert db_status(view.id) == "queued"  # the row is still behind, by design
    assert current_status(view.id).status == "succeeded"  # and what operators read says so already


def test_a_final_failure_wakes_its_waiter_once_the_store_has_it(opsq_env, workers_started, no_fallback):
    workers_started(opsq_env(OPSQ_SLACK_TOKEN="invalid"), queues="slack")
    view = submit_action("slack", "send_message", {"channel": "#a", "text": "x"}).wait(30)
    assert view.status == "failed" and view.error_kind == "auth"
    assert [d.action_id for d in store.dead_letters()] == [view.id]  # read after the store recorded it


def test_wait_all_is_woken_by_every_outcome(opsq_env_sqlite, workers_started, no_fallback):
    workers_started(opsq_env_sqlite(), queues="noop")
    handles = [submit_action("noop", "noop", {"echo": i}) for i in range(60)]
    wait_all(handles, timeout=60)
    assert {current_status(h.id).status for h in handles} == {"succeeded"}


def test_many_waiters_on_one_action_all_return(opsq_env_sqlite, workers_started, no_fallback):
    handle = submit_action("noop", "noop", {"echo": 1})
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(handle.wait(30).status)) for _ in range(4)]
    for t in threads:
        t.start()
    workers_started(opsq_env_sqlite(), queues="noop")
    for t in threads:
        t.join(35)
    assert seen == ["succeeded"] * 4


def test_an_outcome_nobody_published_is_found_by_the_fallback_poll(opsq_env_sqlite):
    # The stuck detector and an operator's purge finish actions without publishing: the waiter still returns.
    handle = submit_action("noop", "noop", {"echo": 2})
    timer = threading.Timer(0.5, lambda: store.mark_failed(handle.id, 1, "dropped by an operator", "purged"))
    timer.start()
    try:
        view = handle.wait(10)
    finally:
        timer.cancel()
    assert view.status == "failed" and view.error_kind == "purged"


def test_a_waiter_survives_its_subscription_being_cut(opsq_env_sqlite, workers_started):
    handle = submit_action("noop", "noop", {"echo": 3})
    seen: list[str] = []
    waiter = threading.Thread(target=lambda: seen.append(handle.wait(30).status))
    waiter.start()
    wait_for(lambda: guard_redis().pubsub_numsub(f"opsq:outcome:{handle.id}")[0][1] == 1, timeout=10,
             what="the waiter to subscribe")
    guard_redis().client_kill_filter(_type="pubsub")  # as a Redis restart or a proxy would
    workers_started(opsq_env_sqlite(), queues="noop")
    waiter.join(35)
    assert seen == ["succeeded"]
    # The next wait subscribes again, on a new connection.
    assert ActionHandle(submit_action("noop", "noop", {"echo": 4}).id).wait(30).status == "succeeded"


def test_a_workflow_waiter_is_woken_by_each_status_change(opsq_env_sqlite, workers_started, no_fallback):
    workers_started(opsq_env_sqlite())
    spec = {"name": "pushed", "steps": [
        {"id": "a", "platform": "noop", "action": "noop", "params": {"echo": 1}},
        {"id": "b", "platform": "noop", "action": "noop", "params": {"echo": 2}, "depends_on": ["a"]},
        {"id": "c", "platform": "noop", "action": "noop", "params": {"echo": 3}, "depends_on": ["b"],
         "requires_approval": True}]}
    handle = submit_workflow(spec)
    assert handle.wait(30).status == "awaiting_approval"
    (approval,) = workflow_state.approvals(workflow_id=handle.id)
    approve(approval["id"], actor="tester")
    assert handle.wait(30).status == "succeeded"


def test_a_woken_wait_reads_the_store_once(opsq_env, workers_started, no_fallback):
    """The happy path of `wait()`: subscribe, read the store once (still open), be woken by the settle, and
    overlay the execution record on that row: no second query (the write-behind holds the row for a minute,
    so a second read would not even help). The worker starts only once the waiter is subscribed, so the
    wait is woken, not answered by its first read."""
    handle = submit_action("noop", "noop", {"echo": 5})
    statements: list[str] = []
    views: list[ActionView] = []
    waiter = threading.Thread(target=lambda: views.append(handle.wait(60)))

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if threading.get_ident() == waiter.ident:
            statements.append(statement)

    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        waiter.start()
        wait_for(lambda: guard_redis().pubsub_numsub(f"opsq:outcome:{handle.id}")[0][1] == 1, timeout=10,
                 what="the waiter to subscribe")
        workers_started(opsq_env(OPSQ_OUTCOME_FLUSH_MS="60000"), queues="noop")
        waiter.join(60)
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)
    assert [(v.status, v.result) for v in views] == [("succeeded", {"echo": 5, "ok": True})]
    assert db_status(handle.id) == "queued"  # what it returned came from Redis, not from a later row
    assert len(statements) == 1, statements


def _pubsub_connections() -> list[dict[str, str]]:
    return [dict(field.split("=", 1) for field in line.split() if "=" in field)
            for line in as_text(guard_redis().execute_command("CLIENT", "LIST", "TYPE", "pubsub")).splitlines()]


def test_a_thousand_concurrent_waiters_each_get_their_own_result(opsq_env_sqlite, workers_started, no_fallback):
    """1000 threads, each waiting for its own action at the same time: every one returns its own action's
    result, and they share this process's one subscription (no connection per waiter). SQLite only (CI time):
    the other tests here run on both kinds of store."""
    n = 1000
    handles = [submit_action("noop", "noop", {"echo": i}) for i in range(n)]
    seen: dict[int, object] = {}
    errors: list[BaseException] = []

    def wait(i: int) -> None:
        try:
            view = handles[i].wait(120)
            seen[i] = (view.status, view.result)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    # Every waiter subscribed before any action can finish (no worker yet): all on the process's one
    # connection (named for it), each channel once.
    channels = [f"opsq:outcome:{h.id}" for h in handles]

    def hub_subscriptions() -> int:
        mine = [c for c in _pubsub_connections() if c.get("name") == waiting.hub_name()]
        assert len(mine) <= 1, mine
        return int(mine[0].get("sub", 0)) if mine else 0

    wait_for(lambda: hub_subscriptions() >= n + 1, timeout=60, what="every waiter subscribed on the hub")
    counts = guard_redis().pubsub_numsub(*channels)
    assert {count for _channel, count in counts} == {1}
    workers_started(opsq_env_sqlite(), queues="noop", concurrency=2)
    for t in threads:
        t.join(150)
    assert errors == []
    assert seen == {i: ("succeeded", {"echo": i, "ok": True}) for i in range(n)}


def test_a_subscribe_is_never_overtaken_by_the_unsubscribe_of_the_waiter_before(opsq_env_sqlite, monkeypatch):
    """The last waiter on a channel leaves (its UNSUBSCRIBE delayed on its way out) while the next arrives:
    the next one's subscription must be the one Redis keeps, and it must be told of a publish."""
    hub = waiting._the_hub()
    channel = "opsq:test:overtaken"
    first, second = waiting._Box(), waiting._Box()
    hub.watch([channel], first)
    real = hub.pubsub.unsubscribe

    def slow(*channels: str) -> None:
        time.sleep(0.3)  # the leaving waiter's thread is slow to send
        real(*channels)

    monkeypatch.setattr(hub.pubsub, "unsubscribe", slow)
    leaving = threading.Thread(target=hub.unwatch, args=([channel], first))
    leaving.start()
    time.sleep(0.05)
    monkeypatch.setattr(hub.pubsub, "unsubscribe", real)
    hub.watch([channel], second)
    leaving.join(5)
    assert guard_redis().pubsub_numsub(channel)[0][1] == 1
    guard_redis().publish(channel, "done")
    assert second.take(5.0) == [(channel, "done")]
    hub.unwatch([channel], second)


def test_a_subscribe_that_could_not_be_sent_leaves_nothing_behind(opsq_env_sqlite, monkeypatch):
    hub = waiting._the_hub()
    channel = "opsq:test:unsent"
    real = hub.pubsub.execute_command

    def fail_once(*args: object) -> None:
        monkeypatch.setattr(hub.pubsub, "execute_command", real)
        raise redis.ConnectionError("simulated: the SUBSCRIBE could not be sent")

    monkeypatch.setattr(hub.pubsub, "execute_command", fail_once)
    with waiting._listening([channel]) as box:
        assert box is None  # this waiter polls
    assert channel not in hub.unconfirmed and channel not in hub.boxes
    started = time.monotonic()
    with waiting._listening([channel]) as box:
        assert box is not None and time.monotonic() - started < 2  # the next subscribes at once


# -- what the waits return (issue 16 item 7): a result object for actions and workflows alike, and wait_all
# returns the final results in the handles' order.


def test_wait_all_returns_each_final_result_in_the_handles_order(opsq_env, workers_started, no_fallback):
    # Successes held behind by the write-behind (read from Redis' execution records, in one round trip), a
    # failure read from the store, handles and bare ids mixed: each comes back where its handle was.
    workers_started(opsq_env(OPSQ_SLACK_TOKEN="invalid", OPSQ_OUTCOME_FLUSH_MS="60000"), queues="noop,slack")
    handles: list[ActionHandle | str] = [submit_action("noop", "noop", {"echo": i}) for i in range(5)]
    handles.insert(2, submit_action("slack", "send_message", {"channel": "#a", "text": "x"}))
    handles[4] = handles[4].id if isinstance(handles[4], ActionHandle) else handles[4]
    views = wait_all(handles, timeout=60)
    assert all(isinstance(v, ActionView) for v in views)
    assert [v.id for v in views] == [h if isinstance(h, str) else h.id for h in handles]
    assert [(v.status, v.result) for v in views] == [
        ("succeeded", {"echo": 0, "ok": True}), ("succeeded", {"echo": 1, "ok": True}), ("failed", None),
        ("succeeded", {"echo": 2, "ok": True}), ("succeeded", {"echo": 3, "ok": True}),
        ("succeeded", {"echo": 4, "ok": True})]
    assert views[2].error_kind == "auth" and views[2].error and all(v.done for v in views)
    assert wait_all([], timeout=1) == []


def test_a_workflow_wait_returns_its_result_as_an_object(opsq_env_sqlite, workers_started, no_fallback):
    workers_started(opsq_env_sqlite(OPSQ_SLACK_TOKEN="invalid"), queues="noop,slack,control")
    done = submit_workflow({"name": "outputs", "steps": [
        {"id": "a", "platform": "noop", "action": "noop", "params": {"echo": 1}},
        {"id": "b", "platform": "noop", "action": "noop", "params": {"echo": "{{ steps.a.output.echo }}"},
         "depends_on": ["a"]}]}).wait(30)
    assert isinstance(done, WorkflowView)
    assert (done.status, done.error, done.failed_step, done.done) == ("succeeded", None, None, True)
    assert done.outputs == {"a": {"echo": 1, "ok": True}, "b": {"echo": 1, "ok": True}}
    assert [(s.id, s.status, s.attempts) for s in done.steps] == [("a", "succeeded", 1), ("b", "succeeded", 1)]
    assert current_status(done.step("b").action_id).result == {"echo": 1, "ok": True}
    assert done.finished_at is not None and done.duration_s is not None and done.duration_s >= 0
    assert done.to_dict()["outputs"] == done.outputs and done.to_dict()["status"] == "succeeded"

    failed = submit_workflow({"name": "fails", "steps": [
        {"id": "a", "platform": "noop", "action": "noop", "params": {"echo": 1}},
        {"id": "b", "platform": "slack", "action": "send_message", "params": {"channel": "#c", "text": "x"},
         "depends_on": ["a"]}]}).wait(60, until=("rolled_back", "rollback_failed"))
    assert (failed.status, failed.failed_step, failed.done) == ("rolled_back", "b", True)
    assert failed.error == "step b failed: auth: slack chat.postMessage: invalid_auth", failed.error
    assert failed.step("b").status == "failed" and failed.outputs == {"a": {"echo": 1, "ok": True}}

    gated = submit_workflow({"name": "gated", "steps": [
        {"id": "a", "platform": "noop", "action": "noop", "requires_approval": True}]})
    waiting_for = gated.wait(30)
    (approval,) = workflow_state.approvals(workflow_id=gated.id)
    assert (waiting_for.status, waiting_for.done, waiting_for.pending_approvals) == (
        "awaiting_approval", False, [approval["id"]])


def test_wait_all_waits_for_workflows_and_actions_alike(opsq_env_sqlite, workers_started, no_fallback):
    workers_started(opsq_env_sqlite(), queues="noop,control")
    flows = [submit_workflow({"name": f"w{i}", "steps": [
        {"id": "only", "platform": "noop", "action": "noop", "params": {"echo": i}}]}) for i in range(3)]
    action = submit_action("noop", "noop", {"echo": "solo"})
    results = wait_all([flows[0], action, flows[1], flows[2]], timeout=60)
    assert [r.id for r in results] == [flows[0].id, action.id, flows[1].id, flows[2].id]
    assert [type(r) for r in results] == [WorkflowView, ActionView, WorkflowView, WorkflowView]
    assert [r.status for r in results] == ["succeeded"] * 4
    assert [r.outputs["only"]["echo"] for r in results if isinstance(r, WorkflowView)] == [0, 1, 2]
    assert isinstance(results[1], ActionView) and results[1].result == {"echo": "solo", "ok": True}
