"""workers.ops.dlq against a SQLite store: a dead letter is replayed once, as a new action linked to the
dead one, with its secrets given again; a failed submit gives it back. The submit itself (Redis) is
replaced by a recording fake: what is tested here is the replay's bookkeeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from workers.cli.main import cli, register
from workers.client import ActionHandle
from workers.errors import EnqueueError, NotFound, SubmitError
from workers.ops import dlq
from workers.settings import reload_settings
from workers.store import actions as store
from workers.store import audit, db
from workers.store.models import DeadLetter

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


# Bulk replay -------------------------------------------------------------------------------------

def _kinded(action_id: str, platform: str, action: str, kind: str, params: dict[str, Any] | None = None) -> int:
    store.create(action_id=action_id, platform=platform, action=action, params=params or {}, priority="normal",
                 queue=platform, max_attempts=1)
    store.mark_failed(action_id, 1, "boom", kind)
    (dead,) = [d for d in store.dead_letters() if d.action_id == action_id]
    return dead.id


@pytest.mark.parametrize(("kwargs", "option", "message"), [
    ({}, None, "give DL_ID, or filters"),
    ({"limit": 5}, None, "give DL_ID, or filters"),  # a limit alone is no filter: it would take the oldest five
    ({"platform": "jira"}, "--platform", "unknown platform 'jira' (known: slack,"),
    ({"error_kind": "nope"}, "--error-kind", "unknown error kind 'nope' (dead letters have: auth,"),
    ({"action": "send_fax"}, "--action", "unknown action 'send_fax' (known:"),
    ({"platform": "notion", "action": "send_message"}, "--action", "unknown action 'send_message' of notion"),
    ({"since": "2x"}, "--since", "takes a duration like 15m, 24h or 7d, not '2x'"),
    ({"since": "-2h"}, "--since", "takes a duration"),
])
def test_a_bad_or_missing_filter_is_refused_naming_the_option(kwargs, option, message):
    with pytest.raises(dlq.BadFilter) as info:
        dlq.replay_filter(**kwargs)
    assert info.value.option == option
    assert message in info.value.message


def test_filters_are_parsed_and_described():
    before = datetime.now(UTC)
    flt = dlq.replay_filter(platform="notion", error_kind="auth", action="create_task", since="2h", limit=10)
    assert flt.platform == "notion" and flt.error_kind == "auth" and flt.action == "create_task"
    assert flt.since is not None and abs((before - timedelta(hours=2) - flt.since).total_seconds()) < 5
    assert flt.describe() == {"platform": "notion", "error_kind": "auth", "action": "create_task", "limit": 10,
                              "since": flt.since.isoformat()}
    assert dlq.replay_filter(every=True).describe() == {"all": True}
    assert dlq.replay_filter(action="send_message").action == "send_message"  # an action of any platform
    # A kind that is never dead-lettered now is still a kind: older dead letters may have it.
    assert dlq.replay_filter(error_kind="permanent").error_kind == "permanent"


def test_idempotence_is_the_executors_declaration():
    assert dlq.idempotent("notion", "update_task") is True
    assert dlq.idempotent("trello", "add_label") is True
    assert dlq.idempotent("gdrive", "delete_file") is True
    assert dlq.idempotent("noop", "noop") is True
    for platform, action in [("slack", "send_message"), ("notion", "create_task"), ("trello", "create_card"),
                             ("gsheets", "append_row"), ("gsheets", "delete_row"), ("webhook", "post"),
                             ("gdrive", "create_file")]:
        assert dlq.idempotent(platform, action) is False, (platform, action)
    assert dlq.idempotent("jira", "x") is None and dlq.idempotent("slack", "send_fax") is None


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"),
                                               (7500, "2h05m"), (86400, "1d00h"), (90000, "1d01h")])
def test_age(seconds, text):
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert dlq.age(now - timedelta(seconds=seconds), now) == text


def test_the_filter_takes_exactly_the_matching_dead_letters_oldest_first(sqlite_store):
    a = _kinded("a", "notion", "create_task", "auth")
    b = _kinded("b", "notion", "update_task", "auth")
    _kinded("c", "slack", "send_message", "auth")
    _kinded("d", "notion", "create_task", "retryable")
    old = _kinded("e", "notion", "create_task", "auth")
    with db.get_engine().begin() as conn:
        conn.execute(update(DeadLetter).where(DeadLetter.id == old)
                     .values(created_at=datetime.now(UTC) - timedelta(hours=3)))
    ids = lambda **kw: [c.dead_letter.id for c in dlq.matching(dlq.replay_filter(**kw))]  # noqa: E731
    assert ids(platform="notion", error_kind="auth", since="2h") == [a, b]
    assert ids(platform="notion", error_kind="auth") == [a, b, old]
    assert ids(platform="notion", error_kind="auth", action="update_task") == [b]
    assert ids(platform="notion", error_kind="auth", limit=1) == [a]
    assert len(ids(every=True)) == 5
    (c,) = dlq.matching(dlq.replay_filter(action="update_task"))
    assert c.idempotent is True and c.blocked is None
    assert c.to_dict()["idempotent"] is True and c.to_dict()["age_s"] >= 0


def test_a_bulk_replay_replays_each_match_once_and_audits_each(sqlite_store, submitted):
    a = _kinded("a", "notion", "create_task", "auth", {"database_id": "d", "title": "t"})
    b = _kinded("b", "notion", "update_task", "auth", {"page_id": "p", "title": "t"})
    other = _kinded("c", "slack", "send_message", "auth", {"channel": "#a", "text": "t"})
    secret = _kinded("w", "notion", "create_task", "auth", {"database_id": "d", "title": "t", "token": "s3cr3t"})
    flt = dlq.replay_filter(platform="notion", error_kind="auth")
    result = dlq.replay_many(flt, actor="alice")
    assert result.replayed == [(a, "a", "replay-1"), (b, "b", "replay-2")]
    assert [(dl, why.split(":")[0]) for dl, why in result.skipped] == [(secret, "secret params not stored")]
    assert result.stopped is None
    assert [(c["action"], c["_replay_of"], c["actor"]) for c in submitted] == [
        ("create_task", "a", "alice"), ("update_task", "b", "alice")]
    assert store.dead_letter(a).replayed_as == "replay-1" and store.dead_letter(other).replayed_at is None
    entries = audit.entries(action="dlq_replay")
    assert sorted(e["target"] for e in entries) == [f"dead_letter:{a}", f"dead_letter:{b}"]
    assert all(e["detail"]["bulk"] == {"platform": "notion", "error_kind": "auth"} for e in entries)
    again = dlq.replay_many(flt, actor="alice")
    assert again.replayed == [] and [dl for dl, _ in again.skipped] == [secret]
    assert len(submitted) == 2


def test_two_bulk_replays_at_once_replay_each_dead_letter_once(sqlite_store, submitted, monkeypatch):
    letters = [_kinded(f"x{n}", "noop", "noop", "internal") for n in range(6)]
    fake = dlq.submit_action

    def slow(*args: Any, **kwargs: Any) -> ActionHandle:  # both operators' listings see every letter
        time.sleep(0.05)
        return fake(*args, **kwargs)

    monkeypatch.setattr(dlq, "submit_action", slow)
    flt = dlq.replay_filter(platform="noop")
    results: list[dlq.BulkReplay] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(dlq.replay_many(flt, actor="t"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replayed = sorted(dl for r in results for dl, _, _ in r.replayed)
    assert replayed == letters  # each exactly once, between the two
    assert len(submitted) == 6
    skipped = [why for r in results for _, why in r.skipped]
    assert skipped and all("already replayed" in why for why in skipped)  # they did overlap


def test_a_bulk_replay_stops_when_the_broker_refuses_and_leaves_the_rest(sqlite_store, submitted, monkeypatch):
    letters = [_kinded(f"y{n}", "noop", "noop", "internal") for n in range(4)]
    fake = dlq.submit_action

    def broker_fails_on_third(*args: Any, **kwargs: Any) -> ActionHandle:
        if len(submitted) == 2:
            raise EnqueueError("could not enqueue: Redis refused the connection; nothing was queued or kept")
        return fake(*args, **kwargs)

    monkeypatch.setattr(dlq, "submit_action", broker_fails_on_third)
    result = dlq.replay_many(dlq.replay_filter(platform="noop"))
    assert [dl for dl, _, _ in result.replayed] == letters[:2]
    assert result.stopped is not None and "Redis refused" in result.stopped and result.left == 2
    assert [d.id for d in store.dead_letters(oldest_first=True)] == letters[2:]  # given back, untouched
    monkeypatch.setattr(dlq, "submit_action", fake)
    assert [dl for dl, _, _ in dlq.replay_many(dlq.replay_filter(platform="noop")).replayed] == letters[2:]


@pytest.mark.parametrize(("args", "message"), [
    ((), "give DL_ID, or filters"),
    (("--platform", "jira"), "unknown platform 'jira'"),
    (("--error-kind", "boom"), "unknown error kind 'boom'"),
    (("--since", "yesterday"), "takes a duration like 15m, 24h or 7d"),
    (("--platform", "slack", "--action", "create_card"), "unknown action 'create_card' of slack"),
    (("7", "--platform", "slack"), "give DL_ID or filters"),
    (("--platform", "slack", "-p", "text=x"), "give its DL_ID"),
])
def test_bad_bulk_input_is_one_error_line_and_exit_2(sqlite_store, args, message):
    register()
    out = CliRunner().invoke(cli, ["dlq", "replay", *args, "--dry-run"])
    assert out.exit_code == 2, out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_a_bulk_replay_without_yes_says_how_many_and_changes_nothing(sqlite_store, submitted):
    _kinded("n1", "noop", "noop", "internal")
    register()
    out = CliRunner().invoke(cli, ["dlq", "replay", "--platform", "noop"])
    assert out.exit_code == 2 and "this replays 1 dead letter(s); add --dry-run to list them, --yes" in out.stderr
    assert submitted == [] and len(store.dead_letters()) == 1


def test_a_stopped_bulk_replay_prints_what_it_did_then_one_error(sqlite_store, submitted, monkeypatch):
    first = _kinded("s1", "noop", "noop", "internal")
    second = _kinded("s2", "noop", "noop", "internal")
    fake = dlq.submit_action

    def broker_fails_on_second(*args: Any, **kwargs: Any) -> ActionHandle:
        if submitted:
            raise EnqueueError("could not enqueue: Redis refused the connection; nothing was queued or kept")
        return fake(*args, **kwargs)

    monkeypatch.setattr(dlq, "submit_action", broker_fails_on_second)
    register()
    out = CliRunner().invoke(cli, ["dlq", "replay", "--platform", "noop", "--yes"])
    assert out.exit_code == 1
    assert out.stdout.splitlines() == [f"replayed dead letter {first} as action replay-1",
                                       "replayed 1, skipped 0, not reached 1"]
    assert out.stderr.startswith("error: stopped: could not enqueue: Redis refused the connection")
    assert "1 dead letter(s) left as they were" in out.stderr
    assert store.dead_letter(second).replayed_at is None
