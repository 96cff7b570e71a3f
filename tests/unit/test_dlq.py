"""workers.ops.dlq against a SQLite store: a dead letter is replayed once, as a new action linked to the
dead one, with its secrets given again; a failed submit gives it back. The submit itself (Redis) is
replaced by a recording fake: what is tested here is the replay's bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest

from workers.client import ActionHandle
from workers.errors import NotFound, SubmitError
from workers.ops import dlq
from workers.settings import reload_settings
from workers.store import actions as store
from workers.store import audit, db

SLACK_HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 't.db'}")
    reload_settings()
    db.reset_engine()


@pytest.fixture
def submitted(monkeypatch) -> list[dict[str, Any]]:
    """What dlq.replay submitted, in order; each submit returns ActionHandle('replay-<n>')."""
    calls: list[dict[str, Any]] = []

    def fake_submit(platform: str, action: str, params: dict[str, Any], **kwargs: Any) -> ActionHandle:
        calls.append({"platform": platform, "action": action, "params": params, **kwargs})
        return ActionHandle(f"replay-{len(calls)}")

    monkeypatch.setattr(dlq, "submit_action", fake_submit)
    return calls


def _dead_letter(action_id: str, *, platform: str = "noop", action: str = "noop",
                 params: dict[str, Any] | None = None, priority: str = "normal") -> int:
    store.create(action_id=action_id, platform=platform, action=action, params=params or {"echo": action_id},
                 priority=priority, queue=platform, max_attempts=3)
    store.mark_failed(action_id, 3, "502", "retryable")
    (dead,) = [d for d in store.dead_letters() if d.action_id == action_id]
    return dead.id


def test_a_stored_webhook_action_keeps_no_secret_path_and_its_dead_letter_asks_for_params(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 't.db'}")
    reload_settings()
    db.reset_engine()
    store.create(action_id="w1", platform="webhook", action="post", params={"url": SLACK_HOOK, "json": {"n": 1}},
                 priority="normal", queue="webhook", max_attempts=3)
    assert store.get("w1").params == {"url": "https://hooks.slack.com/[redacted]", "json": {"n": 1}}
    store.mark_failed("w1", 3, "502", "retryable")
    (dead,) = store.dead_letters()
    with pytest.raises(SubmitError, match="--params-json"):
        dlq.replay(dead.id)
    assert store.dead_letter(dead.id).replayed_at is None  # refused before anything was claimed
    assert all("XXXXSECRETXXXX" not in str(e) for e in audit.entries())


def test_replay_submits_the_stored_action_again_linked_to_the_dead_one(sqlite_store, submitted):
    dl_id = _dead_letter("d1", platform="slack", action="send_message",
                         params={"channel": "#ops", "text": "hi"}, priority="high")
    handle = dlq.replay(dl_id, actor="alice")
    assert handle.id == "replay-1"
    assert submitted == [{"platform": "slack", "action": "send_message", "params": {"channel": "#ops", "text": "hi"},
                          "priority": "high", "_replay_of": "d1", "actor": "alice"}]
    dead = store.dead_letter(dl_id)
    assert dead.replayed_as == "replay-1" and dead.replayed_at is not None
    assert store.dead_letters() == []  # replayed ones are hidden unless asked for
    assert [d.id for d in store.dead_letters(include_replayed=True)] == [dl_id]
    (entry,) = audit.entries(action="dlq_replay")
    assert entry["target"] == f"dead_letter:{dl_id}" and entry["actor"] == "alice"
    assert entry["detail"] == {"action_id": "d1", "replayed_as": "replay-1"}


def test_a_dead_letter_is_replayed_once(sqlite_store, submitted):
    dl_id = _dead_letter("d2")
    first = dlq.replay(dl_id)
    with pytest.raises(SubmitError, match=f"dead letter {dl_id} was already replayed as action {first.id}"):
        dlq.replay(dl_id)
    assert len(submitted) == 1
    assert len(audit.entries(action="dlq_replay")) == 1


def test_a_replay_another_operator_is_submitting_is_refused(sqlite_store, submitted):
    dl_id = _dead_letter("d3")
    assert store.claim_dead_letter(dl_id)  # claimed by someone else, whose submit is under way
    with pytest.raises(SubmitError, match=r"already replayed \(its replay is being submitted now\)"):
        dlq.replay(dl_id)
    assert submitted == []


def test_a_failed_submit_gives_the_dead_letter_back(sqlite_store, submitted, monkeypatch):
    dl_id = _dead_letter("d4")
    working = dlq.submit_action

    def broker_down(*args: Any, **kwargs: Any) -> ActionHandle:
        raise SubmitError("could not enqueue: broker down")

    monkeypatch.setattr(dlq, "submit_action", broker_down)
    with pytest.raises(SubmitError, match="broker down"):
        dlq.replay(dl_id)
    dead = store.dead_letter(dl_id)
    assert dead.replayed_at is None and dead.replayed_as is None
    assert audit.entries(action="dlq_replay") == []
    monkeypatch.setattr(dlq, "submit_action", working)
    assert dlq.replay(dl_id).id == "replay-1"


def test_redacted_params_given_again_are_submitted_with_the_rest(sqlite_store, submitted):
    dl_id = _dead_letter("w2", platform="webhook", action="post", params={"url": SLACK_HOOK, "json": {"n": 1}})
    with pytest.raises(SubmitError, match="--params-json"):
        dlq.replay(dl_id, {"json": {"n": 2}})  # the URL is still the placeholder
    assert submitted == []
    dlq.replay(dl_id, {"url": SLACK_HOOK})
    (call,) = submitted
    assert call["params"] == {"url": SLACK_HOOK, "json": {"n": 1}}
    assert all("XXXXSECRETXXXX" not in str(e) for e in audit.entries())


def test_an_unknown_dead_letter_is_not_found(sqlite_store, submitted):
    with pytest.raises(NotFound, match="no dead letter with id 999"):
        dlq.replay(999)
    assert submitted == []
