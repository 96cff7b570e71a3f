"""Effect keys end to end (issue 11) for Slack, Google Drive and webhooks: real worker processes, real Redis,
the sandbox over real HTTP. A fault applies 30 % of the calls and loses their answers (held past the read
timeout, the connection dropped, a gateway's 502); every action still ends succeeded and the platform's
*state* holds exactly one object per action, because the attempt after a lost answer looks the effect up
(Slack, Drive) or repeats it under the same Idempotency-Key, which the receiver replays (webhook). Without
faults, no lookup is made at all."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from executors.gdrive import EFFECT_PROPERTY
from executors.slack import EFFECT_EVENT_TYPE
from tests.integration.opsq_cli import opsq
from tests.support.wait import stored, wait_for
from workers.client import submit_action, wait_all
from workers.status import ActionStatus
from workers.store.db import session
from workers.store.models import ActionRun
from workflows import state as workflow_state
from workflows.client import submit_workflow

pytestmark = pytest.mark.integration

PER_PLATFORM = 25
#: 30 % of calls fail on purpose, lookups included: enough attempts that none runs out (0.3^12).
MAX_ATTEMPTS = 12
CHANNEL = "C0EFFECTS1"
#: Half the messages go to a #name: the lookup resolves it with conversations.list (history takes IDs only).
CHANNEL_NAME = "#effects-by-name"
PLATFORMS = ("slack", "gdrive", "webhook")
#: The request that makes each platform's object, and the lookup that finds it again.
CREATES = {"slack": "/slack/chat.postMessage", "gdrive": "/gdrive/drive/v3/files", "webhook": "/webhook/"}
LOOKUPS = {"slack": "/slack/conversations.history", "gdrive": "/gdrive/drive/v3/files"}


def _env(opsq_env_sqlite: Callable[..., dict[str, str]]) -> dict[str, str]:
    return opsq_env_sqlite(
        # A lost answer must be noticed quickly: the applied_timeout fault holds it past this. Not lower: a
        # request the (in-process, shared-CPU) sandbox reaches only after this and after the next attempt's
        # lookup takes effect after that lookup, which no lookup can see (the failure message says so).
        OPSQ_HTTP_READ_TIMEOUT_S="2",
        OPSQ_RATE_LIMITS=json.dumps({p: {"rate": 0} for p in PLATFORMS}),
        # A breaker that stays closed under 30 % failures: the test is about reconciliation, not cool-downs.
        OPSQ_BREAKER=json.dumps({"failure_threshold": 100000}),
    )


def _submit(sandbox_url: str, tag: str) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {p: [] for p in PLATFORMS}
    for i in range(PER_PLATFORM):
        channel = CHANNEL if i % 2 else CHANNEL_NAME
        ids["slack"].append(submit_action("slack", "send_message", {"channel": channel, "text": f"{tag}-{i}"},
                                          max_attempts=MAX_ATTEMPTS).id)
        ids["gdrive"].append(submit_action("gdrive", "create_file", {"name": f"{tag}-{i}.txt"},
                                           max_attempts=MAX_ATTEMPTS).id)
        ids["webhook"].append(submit_action("webhook", "post", {"url": f"{sandbox_url}/webhook/hooks/{tag}",
                                                                "json": {"n": i}}, max_attempts=MAX_ATTEMPTS).id)
    return ids


def _wait_final(ids: list[str]) -> dict[str, ActionRun]:
    def final() -> bool:
        with session() as s:
            return not s.scalars(select(ActionRun.id).where(ActionRun.id.in_(ids), ActionRun.status.not_in(
                [ActionStatus.SUCCEEDED, ActionStatus.FAILED]))).all()

    try:
        # Under pytest-timeout's 180 s, so that a stall says which actions stalled, and where.
        wait_for(final, timeout=150, what="every action final", interval=0.5)
    except AssertionError:
        with session() as s:
            open_runs = [(r.id, r.platform, r.status, r.attempts, r.error_kind, r.error) for r in s.scalars(
                select(ActionRun).where(ActionRun.id.in_(ids), ActionRun.status.not_in(
                    [ActionStatus.SUCCEEDED, ActionStatus.FAILED]))).all()]
        raise AssertionError(f"{len(open_runs)} actions not final after 150 s: {open_runs[:10]}") from None
    with session() as s:
        runs = {r.id: r for r in s.scalars(select(ActionRun).where(ActionRun.id.in_(ids))).all()}
        for run in runs.values():
            s.expunge(run)
    return runs


def _objects_per_key(state: dict[str, Any]) -> dict[str, collections.Counter[str]]:
    """platform -> effect key -> how many objects in the sandbox's state carry it."""
    slack = collections.Counter(
        m["metadata"]["event_payload"]["key"] for m in state["slack"]["messages"]
        if (m.get("metadata") or {}).get("event_type") == EFFECT_EVENT_TYPE)
    gdrive = collections.Counter(f["appProperties"][EFFECT_PROPERTY] for f in state["gdrive"]["files"]
                                 if EFFECT_PROPERTY in (f.get("appProperties") or {}))
    webhook = collections.Counter(r["idempotency_key"] for r in state["webhook"]["received"]
                                  if r.get("idempotency_key"))
    return {"slack": slack, "gdrive": gdrive, "webhook": webhook}


def _key_of(platform: str, entry: dict[str, Any]) -> str | None:
    """The effect key a create request carried, where the platform carries it."""
    body = entry.get("body") or {}
    if platform == "slack":
        return ((body.get("metadata") or {}).get("event_payload") or {}).get("key")
    if platform == "gdrive":
        return (body.get("appProperties") or {}).get(EFFECT_PROPERTY)
    return entry.get("idempotency_key")


def _creates(log: list[dict[str, Any]], platform: str) -> list[dict[str, Any]]:
    return [e for e in log if e["method"] == "POST" and e["path"].startswith(CREATES[platform])]


def _lookups(log: list[dict[str, Any]], platform: str) -> list[dict[str, Any]]:
    return [e for e in log if e["method"] == "GET" and e["path"] == LOOKUPS[platform]]


def _timeline(platform: str, log: list[dict[str, Any]], objects: collections.Counter[str]) -> str:
    """For a key with two objects: when each create was sent, took effect and was answered, and the lookups."""
    lines = [f"{platform}: more than one object for a key"]
    for key in [k for k, n in objects.items() if n > 1]:
        for e in log:
            if (e["method"] == "POST" and _key_of(platform, e) == key) or (e["method"] == "GET" and
                                                                          e["path"] == LOOKUPS.get(platform)):
                lines.append(f"  {key[:8]} seq {e['seq']} {e['method']} {e['path']} sent {e['started']:.3f} "
                             f"applied {e['applied_at']} answered {e['finished']} {e['answer']} {e['fault']}")
    return "\n".join(lines)


@pytest.mark.parametrize("mode", ["applied_timeout", "applied_reset", "applied_502"])
def test_lost_answers_leave_one_object_per_action(opsq_env_sqlite, workers_started, sandbox, sandbox_client,
                                                  mode: str) -> None:
    env = _env(opsq_env_sqlite)
    for platform in PLATFORMS:
        # applied_timeout holds 4 s, past the 2 s read timeout; the others lose the answer at once.
        sandbox_client.fault(platform, mode=mode, rate=0.3, latency_ms=4000 if mode == "applied_timeout" else 0)
    workers_started(env, queues=",".join(PLATFORMS), concurrency=4)
    workers_started(env, queues=",".join(PLATFORMS), concurrency=4)
    ids = _submit(sandbox.url, f"lost-{mode}")
    every = [i for p in PLATFORMS for i in ids[p]]
    runs = _wait_final(every)
    sandbox_client.clear_faults()
    failed = {i: (r.platform, r.attempts, r.error_kind, r.error) for i, r in runs.items()
              if r.status != ActionStatus.SUCCEEDED}
    assert failed == {}

    state = sandbox_client.state()
    objects = _objects_per_key(state)
    log = sandbox_client.requests()
    summary = {}
    for platform in PLATFORMS:
        # Exactly one object per action in the platform's state, and none that no action made.
        assert objects[platform] == {i: 1 for i in ids[platform]}, _timeline(platform, log, objects[platform])
        creates = _creates(log, platform)
        lost = [e for e in creates if e["answer"] == "lost"]
        assert lost and all(e["applied"] for e in lost), f"{platform}: the fault never hit a create"
        if platform == "webhook":
            # No lookup exists: the repeat call under the same key is the reconciliation, and the receiver
            # answered it with its first answer instead of delivering again.
            per_key = collections.Counter(e["idempotency_key"] for e in creates)
            assert set(per_key) == set(ids["webhook"])
            replays = state["webhook"]["replays"]
            # Every request after a key's first was replayed, and every key whose answer was lost had one.
            assert {k: n - 1 for k, n in per_key.items() if n > 1} == replays
            assert {e["idempotency_key"] for e in lost} <= set(replays)
            assert sum(e["replayed"] for e in creates) == sum(replays.values())
            assert not any(r.reconciled for i, r in runs.items() if i in ids["webhook"])
            summary[platform] = f"{len(lost)} answers lost, {sum(replays.values())} replays, 0 lookups"
            continue
        lookups = _lookups(log, platform)
        # Each lost create was followed by an attempt that looked first (a lookup can be lost too, and is
        # made again), and no action looked without cause.
        assert len(lookups) >= len(lost)
        lost_keys = {_key_of(platform, e) for e in lost}
        reconciled = {i for i in ids[platform] if runs[i].reconciled}
        # Every action whose create answer was lost found its object by the key; no other action reconciled.
        assert reconciled == lost_keys, {k: (platform, runs[k].attempts, runs[k].result, [
            (e["seq"], e["status"], e["answer"], e["fault"]) for e in creates if _key_of(platform, e) == k])
            for k in lost_keys ^ reconciled}
        # And no create was made after the lost one for those actions: one create per action, exactly.
        assert collections.Counter(_key_of(platform, e) for e in creates if e["applied"]) == \
            {i: 1 for i in ids[platform]}
        summary[platform] = f"{len(lost)} answers lost, {len(lookups)} lookups, {len(reconciled)} reconciled"
        if platform == "slack":
            by_name = sum(1 for i in reconciled if runs[i].params["channel"] == CHANNEL_NAME)
            summary[platform] += f" ({by_name} sent to {CHANNEL_NAME})"
    print(f"\n{mode}: {PER_PLATFORM} actions per platform, one object each; " + "; ".join(
        f"{p}: {s}" for p, s in summary.items()))


def test_no_lookup_when_no_answer_is_lost(opsq_env_sqlite, workers_started, sandbox, sandbox_client) -> None:
    """The happy path costs nothing: not one lookup, no replay, nothing reconciled."""
    env = _env(opsq_env_sqlite)
    workers_started(env, queues=",".join(PLATFORMS), concurrency=4)
    ids = _submit(sandbox.url, "happy")
    every = [i for p in PLATFORMS for i in ids[p]]
    runs = _wait_final(every)
    assert collections.Counter(r.status for r in runs.values()) == {ActionStatus.SUCCEEDED: len(every)}
    assert not any(r.reconciled for r in runs.values())
    log = sandbox_client.requests()
    assert [e for p in LOOKUPS for e in _lookups(log, p)] == []
    assert [e for e in log if e["path"] == "/slack/conversations.list"] == []
    assert not any(e["replayed"] for e in log)
    state = sandbox_client.state()
    assert state["webhook"]["replays"] == {}
    objects = _objects_per_key(state)
    for platform in PLATFORMS:
        assert objects[platform] == {i: 1 for i in ids[platform]}
        assert len(_creates(log, platform)) == PER_PLATFORM


def test_a_call_that_takes_effect_after_the_read_timeout_is_not_made_twice(opsq_env_sqlite, workers_started,
                                                                            sandbox_client) -> None:
    """A platform slower than the read timeout (the sandbox holds the call 2.5 s *before* applying it, 1 s
    read timeout): the call is ambiguous and its effect not there yet when it times out. The next attempt waits
    OPSQ_AMBIGUOUS_SETTLE_S (here 3 s; the read timeout by default) before it looks, finds the late message and
    posts nothing."""
    env = opsq_env_sqlite(OPSQ_HTTP_READ_TIMEOUT_S="1", OPSQ_AMBIGUOUS_SETTLE_S="3",
                          OPSQ_RATE_LIMITS=json.dumps({"slack": {"rate": 0}}))
    sandbox_client.fault("slack", mode="ok", latency_ms=2500, times=1, match="chat.postMessage")
    workers_started(env, queues="slack", concurrency=1)
    action = submit_action("slack", "send_message", {"channel": CHANNEL, "text": "late"}, max_attempts=MAX_ATTEMPTS)
    runs = _wait_final([action.id])
    assert runs[action.id].status == ActionStatus.SUCCEEDED
    # Whatever the outcome, count only once the slow first call has taken effect.
    wait_for(lambda: _creates(sandbox_client.requests("slack"), "slack")[0]["applied_at"], timeout=10,
             what="the slow call to take effect")
    messages = sandbox_client.state("slack")["messages"]
    assert len(messages) == 1, _timeline("slack", sandbox_client.requests("slack"),
                                         collections.Counter({action.id: len(messages)}))


def _rollback_spec(sandbox_url: str) -> dict[str, Any]:
    return {"name": "lost-undo-messaging", "steps": [
        {"id": "file", "platform": "gdrive", "action": "create_file", "params": {"name": "undo-me.txt"}},
        {"id": "msg", "platform": "slack", "action": "send_message", "params": {"channel": CHANNEL, "text": "undo me"},
         "depends_on": ["file"]},
        {"id": "hook", "platform": "webhook", "action": "post",
         "params": {"url": f"{sandbox_url}/webhook/hooks/do", "json": {"do": 1},
                    "compensation_url": f"{sandbox_url}/webhook/hooks/undo"}, "depends_on": ["msg"]},
        # Fails for good (Drive answers 404 for a file that does not exist): the workflow rolls back.
        {"id": "fail", "platform": "gdrive", "action": "delete_file", "params": {"file_id": "missing0"},
         "depends_on": ["hook"]},
    ]}


def test_a_compensation_whose_answer_is_lost_is_not_repeated(opsq_env_sqlite, workers_started, sandbox,
                                                             sandbox_client) -> None:
    """Rollback through lost answers: each undo's request is applied and its answer lost once. Slack's and
    Drive's are not made again (the next attempt sees the message / the file gone: already undone); the
    webhook's is repeated under the compensation's own key and the receiver replays it (one delivery)."""
    workers_started(_env(opsq_env_sqlite), concurrency=2)  # every queue: a rollback is driven from control
    # Only the undo requests match: chat.delete, a DELETE of a created file (Drive ids start with "1"; the
    # lookup's GET on the same path comes after the fault is used up), the compensation URL.
    sandbox_client.fault("slack", mode="applied_reset", match="chat.delete", times=1)
    sandbox_client.fault("gdrive", mode="applied_502", match="/drive/v3/files/1", times=1)
    sandbox_client.fault("webhook", mode="applied_timeout", latency_ms=4000, match="/hooks/undo", times=1)
    handle = submit_workflow(_rollback_spec(sandbox.url))
    assert handle.wait(120, until=("rolled_back", "rollback_failed")).status == "rolled_back"
    comps = workflow_state.compensations(handle.id)
    assert [(c["step_id"], c["status"]) for c in comps] == [("hook", "done"), ("msg", "done"), ("file", "done")]

    log = sandbox_client.requests()
    lost = sorted((e["platform"], e["method"]) for e in log if e["answer"] == "lost")
    assert lost == [("gdrive", "DELETE"), ("slack", "POST"), ("webhook", "POST")]
    deletes = [e for e in log if e["path"] == "/slack/chat.delete"]
    assert len(deletes) == 1  # not repeated: the lookup found the message gone
    checks = [e for e in log if e["path"] == "/slack/conversations.history"]
    assert checks and checks[-1]["response"]["messages"] == []
    drive_deletes = [e for e in log if e["platform"] == "gdrive" and e["method"] == "DELETE"]
    assert len(drive_deletes) == 1
    assert any(e["platform"] == "gdrive" and e["method"] == "GET" and e["status"] == 404 for e in log)
    undo_posts = [e for e in log if e["path"] == "/webhook/hooks/undo"]
    assert len(undo_posts) == 2 and [e["replayed"] for e in undo_posts] == [False, True]
    assert len({e["idempotency_key"] for e in undo_posts}) == 1
    platforms = sandbox_client.state()
    assert platforms["slack"]["messages"] == [] and platforms["gdrive"]["files"] == []
    assert [r["path"] for r in platforms["webhook"]["received"]] == ["/hooks/do", "/hooks/undo"]


def test_a_worker_killed_during_the_call_leaves_one_object(opsq_env_sqlite, workers_started, sandbox,
                                                          sandbox_client) -> None:
    """The call reached the platform and acted; the worker died waiting for the answer. Once its lease ran
    out another worker runs the action: a lease that expired while running is ambiguous, so Slack and Drive
    look the effect up and find it (reconciled, one create each); the webhook is sent again under the same
    Idempotency-Key and the receiver replays it (one delivery)."""
    env = {**_env(opsq_env_sqlite), "OPSQ_HTTP_READ_TIMEOUT_S": "30", "OPSQ_IDEMPOTENCY_LEASE_S": "4",
           "OPSQ_CONSUMER_TTL_S": "4"}
    for platform in PLATFORMS:  # applied at once, the answer held 20 s: the worker is killed while it waits
        sandbox_client.fault(platform, mode="applied_timeout", latency_ms=20_000, times=1)
    victim = workers_started(env, queues=",".join(PLATFORMS), concurrency=3)
    ids = {"slack": submit_action("slack", "send_message", {"channel": CHANNEL_NAME, "text": "killed"},
                                  max_attempts=MAX_ATTEMPTS).id,
           "gdrive": submit_action("gdrive", "create_file", {"name": "killed.txt"}, max_attempts=MAX_ATTEMPTS).id,
           "webhook": submit_action("webhook", "post", {"url": f"{sandbox.url}/webhook/hooks/killed",
                                                        "json": {"k": 1}}, max_attempts=MAX_ATTEMPTS).id}
    wait_for(lambda: sum(1 for e in sandbox_client.requests() if e["fault"] == "applied_timeout") == 3,
             timeout=30, what="the three calls applied, their answers held")
    victim.kill()
    workers_started(env, queues=",".join(PLATFORMS), concurrency=3)
    wait_all(list(ids.values()), timeout=120)
    views = dict(zip(ids, stored(list(ids.values())), strict=True))
    assert {p: (v.status, v.reconciled) for p, v in views.items()} == {
        "slack": ("succeeded", True), "gdrive": ("succeeded", True), "webhook": ("succeeded", False)}, \
        {p: v.error for p, v in views.items()}
    objects = _objects_per_key(sandbox_client.state())
    assert {p: dict(objects[p]) for p in PLATFORMS} == {p: {ids[p]: 1} for p in PLATFORMS}
    log = sandbox_client.requests()
    for platform in ("slack", "gdrive"):
        assert len(_creates(log, platform)) == 1 and _lookups(log, platform), platform  # looked, did not call
    hooks = _creates(log, "webhook")
    assert [e["replayed"] for e in hooks] == [False, True] and {e["idempotency_key"] for e in hooks} == {ids["webhook"]}


def test_action_status_says_each_actions_guarantee(opsq_env_sqlite) -> None:
    """An action whose lost answer can be looked up says exactly-once-effect; one that cannot (a webhook: only
    a receiver that honours Idempotency-Key makes its repeat harmless) says at-least-once."""
    env = opsq_env_sqlite()
    slack = submit_action("slack", "send_message", {"channel": CHANNEL, "text": "g"})
    hook = submit_action("webhook", "post", {"url": "http://receiver.test/hook"})
    shown = {h.id: json.loads(opsq(env, "action", "status", h.id, "--json").stdout)["guarantee"]
             for h in (slack, hook)}
    assert shown == {slack.id: "exactly-once-effect", hook.id: "at-least-once"}
    assert "if an answer is lost: at-least-once" in opsq(env, "action", "status", hook.id).stdout
