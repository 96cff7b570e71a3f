"""A truthful audit trail (issue 10, item 5): an entry for exactly the changes that happened, none for a
change that was refused, no change without its entry, and read commands that write nothing. Every failure
here is real: a redis-server the test stopped, a database on a closed port, a write the database refuses."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from beat import backup
from tests.integration.opsq_cli import opsq
from tests.support.redis_server import OwnedRedis, free_port
from workers.broker_transport import QUARANTINE_KEY
from workers.client import submit_action
from workers.ops.queue_ops import PAUSED
from workers.store import actions as store
from workers.store import audit
from workers.store import db as store_db
from workflows import state
from workflows.spec import WorkflowSpec
from workflows.status import WorkflowStatus

pytestmark = pytest.mark.integration


def _one_clear_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _trail(env: dict[str, str], action: str) -> list[dict]:
    out = opsq(env, "audit", "list", "--action", action, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_submit_the_broker_refused_is_not_audited(opsq_env_sqlite, tmp_path):
    env = opsq_env_sqlite()
    server = OwnedRedis(tmp_path / "redis").start()
    server.stop()  # a real refusal: the port it listened on is closed now
    down = {**env, "OPSQ_REDIS_URL": server.url()}

    refused = opsq(down, "submit", "noop", "noop", "-p", "echo=lost", timeout=120)
    assert refused.returncode != 0
    line = _one_clear_line(refused.stderr)
    assert "nothing was queued" in line

    assert _trail(env, "submit") == []  # nothing was submitted: no `submit` entry, pending or chained
    actions = json.loads(opsq(env, "action", "list", "--json").stdout)
    assert actions == []
    # The trail's chain still verifies, and a later real submit is the only entry.
    ok = opsq(env, "submit", "noop", "noop", "-p", "echo=kept")
    assert ok.returncode == 0, ok.stderr
    entries = _trail(env, "submit")
    assert [e["target"] for e in entries] == [f"action:{ok.stdout.strip()}"]


def test_a_submit_whose_entry_was_sealed_before_the_broker_refused_is_withdrawn(opsq_env_sqlite):
    """The race the pending entry leaves: a seal (beat, every 30 s) chains the entry between the record's
    commit and the broker's refusal. The chain cannot be edited, so the withdrawal is an entry of its own."""
    opsq_env_sqlite()
    store.create(action_id="a" * 32, platform="noop", action="noop", params={}, priority="normal", queue="noop",
                 max_attempts=1, actor="svc")
    assert audit.seal() == 1
    store.discard("a" * 32, "the broker refused the message: test")
    rows = audit.entries(limit=10)
    assert [(r["action"], r["target"]) for r in rows] == [("submit", "action:" + "a" * 32),
                                                          ("submit_withdrawn", "action:" + "a" * 32)]
    assert "the broker refused" in rows[1]["detail"]["reason"]
    assert audit.verify().ok


def test_a_refused_workflow_rollback_is_not_audited(opsq_env_sqlite):
    env = opsq_env_sqlite()
    spec = WorkflowSpec.model_validate({"name": "done", "steps": [{"id": "a", "platform": "noop", "action": "noop"}]})
    wid = state.create_run(spec, {}, "normal", workflow_id="f" * 32, idempotency_key=None, created_by="svc")
    assert state.transition(wid, WorkflowStatus.RUNNING, allowed_from=(WorkflowStatus.PENDING,))
    assert state.transition(wid, WorkflowStatus.SUCCEEDED, allowed_from=(WorkflowStatus.RUNNING,))

    refused = opsq(env, "workflow", "rollback", wid, "--actor", "dana")
    assert refused.returncode != 0
    assert "nothing to roll back" in _one_clear_line(refused.stderr)
    assert _trail(env, "workflow_rollback") == []
    assert state.get_run_row(wid)["status"] == WorkflowStatus.SUCCEEDED


def test_a_workflow_rollback_that_happened_is_audited_with_its_change(opsq_env_sqlite, redis_client):
    env = opsq_env_sqlite()
    spec = WorkflowSpec.model_validate({"name": "half", "steps": [{"id": "a", "platform": "noop", "action": "noop"}]})
    wid = state.create_run(spec, {}, "normal", workflow_id="e" * 32, idempotency_key=None, created_by="svc")
    assert state.transition(wid, WorkflowStatus.RUNNING, allowed_from=(WorkflowStatus.PENDING,))

    done = opsq(env, "workflow", "rollback", wid, "--actor", "dana")
    assert done.returncode == 0, done.stderr
    entries = _trail(env, "workflow_rollback")
    assert [(e["actor"], e["target"], e["detail"]["status"]) for e in entries] == [
        ("dana", f"workflow:{wid}", WorkflowStatus.RUNNING)]
    assert state.get_run_row(wid)["status"] == WorkflowStatus.ROLLING_BACK


def test_queue_pause_with_the_database_down_changes_nothing(opsq_env_sqlite, redis_client):
    env = opsq_env_sqlite()
    down = {**env, "OPSQ_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"}

    refused = opsq(down, "queue", "pause", "noop", "--actor", "dana")
    assert refused.returncode != 0
    assert redis_client.hget(PAUSED, "noop") is None  # the queue still runs
    line = _one_clear_line(refused.stderr)
    assert "not paused" in line and "audit" in line

    paused = opsq(env, "queue", "pause", "noop", "--actor", "dana")
    assert paused.returncode == 0, paused.stderr
    refused = opsq(down, "queue", "resume", "noop", "--actor", "dana")
    assert refused.returncode != 0 and "not resumed" in _one_clear_line(refused.stderr)
    assert redis_client.hget(PAUSED, "noop") is not None  # still paused, as the trail says

    redis_client.lpush("noop", b'{"not": "cleared"}')
    refused = opsq(down, "queue", "clear", "noop", "--yes", "--actor", "dana")
    assert refused.returncode != 0 and "not cleared" in _one_clear_line(refused.stderr)
    assert redis_client.llen("noop") == 1
    assert [e["actor"] for e in _trail(env, "queue_pause")] == ["dana"]
    assert _trail(env, "queue_resume") == [] and _trail(env, "queue_clear") == []


def _refuse_audit_writes(sqlite_url: str) -> None:
    """A database that is up but refuses the audit entry itself (as a full disk would): a trigger."""
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN "
                     "SELECT RAISE(ABORT, 'audit write refused by the test'); END")


def test_a_redis_change_whose_audit_write_fails_is_undone(opsq_env_sqlite, sqlite_url, redis_client):
    env = opsq_env_sqlite()
    assert opsq(env, "db", "upgrade").returncode == 0
    store_db.reset_engine()
    _refuse_audit_writes(sqlite_url)

    refused = opsq(env, "queue", "pause", "noop", "--actor", "dana")
    assert refused.returncode != 0
    assert redis_client.hget(PAUSED, "noop") is None
    line = _one_clear_line(refused.stderr)
    assert "not paused" in line and "audit write refused by the test" in line

    redis_client.lpush("noop", b"first", b"second")
    refused = opsq(env, "queue", "clear", "noop", "--yes", "--actor", "dana")
    assert refused.returncode != 0 and "not cleared" in _one_clear_line(refused.stderr)
    assert redis_client.lrange("noop", 0, -1) == [b"second", b"first"]  # put back, in their order

    refused = opsq(env, "circuit", "open", "noop", "--reason", "drill", "--actor", "dana")
    assert refused.returncode != 0 and "audit" in _one_clear_line(refused.stderr)
    status = json.loads(opsq(env, "circuit", "status", "noop", "--json").stdout)
    status = status[0] if isinstance(status, list) else status
    assert status["state"] == "closed"

    submitted = opsq(env, "submit", "noop", "noop", "--idempotency-key", "drill-key")
    assert submitted.returncode == 0, submitted.stderr
    key = "opsq:idem:drill-key"
    ttl_before = redis_client.ttl(key)
    refused = opsq(env, "idempotency", "clear", "drill-key", "--actor", "dana")
    assert refused.returncode != 0 and "not cleared" in _one_clear_line(refused.stderr)
    assert redis_client.get(key) == submitted.stdout.strip().encode()  # put back, with its expiry
    assert 0 < redis_client.ttl(key) <= ttl_before


def _audit_rows(path: Path) -> tuple[list, list, list]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return (conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall(),
                conn.execute("SELECT * FROM audit_pending ORDER BY id").fetchall(),
                conn.execute("SELECT * FROM audit_head").fetchall())


def test_reading_the_trail_of_a_damaged_copy_writes_nothing_into_it(opsq_env_sqlite, sqlite_url, tmp_path):
    env = opsq_env_sqlite()
    for n in range(3):
        assert opsq(env, "submit", "noop", "noop", "-p", f"echo={n}").returncode == 0
    store_db.reset_engine()
    original = Path(sqlite_url.removeprefix("sqlite:///"))
    copy_dir = tmp_path / "incident"
    copy_dir.mkdir()
    with sqlite3.connect(original) as conn:  # a consistent copy, the WAL folded in
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(original, copy_dir / "damaged.db")
    copy = copy_dir / "damaged.db"
    with sqlite3.connect(copy) as conn:  # the damage: an entry edited by hand
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = (SELECT min(id) FROM audit_log)")
    before = _audit_rows(copy)
    assert len(before[1]) == 3  # the submits' entries are pending (no seal ran yet)

    on_copy = {**env, "OPSQ_DATABASE_URL": f"sqlite:///{copy}"}
    listed = opsq(on_copy, "audit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert _audit_rows(copy) == before  # nothing was sealed into the copy
    rows = json.loads(listed.stdout)
    assert sum(1 for r in rows if r["action"] == "submit") == 3  # pending entries are shown...
    assert all(r.get("pending") for r in rows if r["action"] == "submit")
    verified = opsq(on_copy, "audit", "verify", "--json")
    assert json.loads(verified.stdout)["pending"] == 3
    for read in (("action", "list"), ("dlq", "list"), ("workflow", "list"), ("alerts", "list"),
                 ("approvals", "list")):
        out = opsq(on_copy, *read)
        assert out.returncode == 0, (read, out.stderr)
    assert _audit_rows(copy) == before  # ...and nothing was sealed into the copy


READ_COMMANDS = (
    ("action", "list"), ("alerts", "list", "--all"), ("analyze", "failures"), ("approvals", "list", "--all"),
    ("audit", "list"), ("audit", "verify"), ("backup", "list"), ("circuit", "history"), ("circuit", "status"),
    ("db", "current"), ("dlq", "list"), ("idempotency", "show", "k-1"), ("logs", "errors"),
    ("logs", "platform", "noop"), ("maintenance", "list"), ("metrics",), ("queue", "quarantine", "list"),
    ("queue", "status"), ("queue", "stuck"), ("ratelimit", "status"), ("workflow", "list"), ("validate-env",),
)


def _tables(path: Path) -> dict[str, list]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: sorted(map(repr, conn.execute(f'SELECT * FROM "{n}"').fetchall())) for n in names}


def _opsq_keys(client) -> dict[bytes, bytes]:
    """Everything opsqueue keeps in Redis, but what a connection that asks the workers leaves by being one:
    Celery's pidbox replies and bindings, and the liveness record every consuming connection keeps
    (opsq:consumer*, workers.consumer) while it is open."""
    return {k: client.dump(k) for k in client.scan_iter()
            if b"pidbox" not in k and not k.startswith((b"_kombu", b"opsq:consumer"))}


def test_read_commands_write_nothing(opsq_env_sqlite, sqlite_url, redis_client):
    env = opsq_env_sqlite()
    spec = WorkflowSpec.model_validate({"name": "w", "steps": [{"id": "a", "platform": "noop", "action": "noop"}]})
    wid = state.create_run(spec, {}, "normal", workflow_id="d" * 32, idempotency_key=None, created_by="svc")
    action_id = opsq(env, "submit", "noop", "noop", "-p", "echo=1", "--idempotency-key", "k-1").stdout.strip()
    store_db.reset_engine()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db_before, redis_before = _tables(path), _opsq_keys(redis_client)
    assert db_before["audit_pending"]  # the submit's entry, not chained yet

    for read in (*READ_COMMANDS, ("action", "status", action_id), ("workflow", "status", wid),
                 ("workflow", "state", wid), ("logs", "workflow", wid)):
        out = opsq(env, *read)
        assert "Traceback" not in out.stderr, (read, out.stderr)
        assert _tables(path) == db_before, f"opsq {' '.join(read)} wrote to the database"
        assert _opsq_keys(redis_client) == redis_before, f"opsq {' '.join(read)} wrote to Redis"


def test_reading_the_trail_of_an_older_copy_does_not_migrate_it(opsq_env_sqlite, tmp_path):
    """A copy kept from before an upgrade (schema 0004): `opsq audit list|verify` read it as it is."""
    env = opsq_env_sqlite()
    old = tmp_path / "old.db"
    engine = store_db.make_engine(f"sqlite:///{old}")
    store_db.upgrade(engine, "0004")
    engine.dispose()
    on_old = {**env, "OPSQ_DATABASE_URL": f"sqlite:///{old}"}
    for read in (("audit", "list", "--json"), ("audit", "verify")):
        out = opsq(on_old, *read)
        assert out.returncode == 0, (read, out.stderr)
    with sqlite3.connect(f"file:{old}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0004",)


def test_refused_approval_decisions_and_resolutions_are_not_audited(opsq_env_sqlite, redis_client):
    env = opsq_env_sqlite()
    spec = WorkflowSpec.model_validate({"name": "gate", "steps": [
        {"id": "a", "platform": "noop", "action": "noop", "requires_approval": True}]})
    wid = state.create_run(spec, {}, "normal", workflow_id="c" * 32, idempotency_key=None, created_by="svc")
    assert state.transition(wid, WorkflowStatus.AWAITING_APPROVAL, allowed_from=(WorkflowStatus.PENDING,))
    approval = state.create_approval(wid, 0, ["a"], {}, 3600, "svc")

    first = opsq(env, "approvals", "deny", approval, "--reason", "no", "--actor", "dana")
    assert first.returncode == 0, first.stderr
    again = opsq(env, "approvals", "deny", approval, "--reason", "no again", "--actor", "erin")
    assert again.returncode != 0 and "already denied" in _one_clear_line(again.stderr)
    assert [e["actor"] for e in _trail(env, "deny")] == ["dana"]

    assert state.transition(wid, WorkflowStatus.ROLLED_BACK, allowed_from=(WorkflowStatus.ROLLING_BACK,))
    refused = opsq(env, "workflow", "mark-resolved", wid, "--note", "fixed by hand", "--actor", "dana")
    assert refused.returncode != 0 and "cannot be marked resolved" in _one_clear_line(refused.stderr)
    assert _trail(env, "mark_resolved") == []


def test_a_restore_is_audited_in_the_database_it_restored(opsq_env_sqlite, tmp_path):
    """`backup.restore(database_url=...)` into another database than the process's: its entry belongs to the
    restored trail (it was appended to the process's database, outside the restore's transaction)."""
    opsq_env_sqlite()
    audit.append("circuit_reset", "platform:noop", {}, actor="t")
    path = backup.create(tmp_path / "backups")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    backup.restore(path, database_url=target, actor="dana")
    assert [e["action"] for e in audit.entries()] == ["circuit_reset"]  # the process's own trail: unchanged
    with sqlite3.connect(tmp_path / "target.db") as conn:
        rows = conn.execute("SELECT action, actor FROM audit_log ORDER BY id").fetchall()
    assert rows == [("circuit_reset", "t"), ("backup_restore", "dana")]


def test_a_pause_that_cannot_be_audited_leaves_a_real_worker_consuming(opsq_env_sqlite, sqlite_url,
                                                                       workers_started, redis_client):
    """The undo of a pause is real: the worker told to stop consuming is told to start again."""
    env = opsq_env_sqlite()
    assert opsq(env, "db", "upgrade").returncode == 0
    worker = workers_started(env, queues="noop", concurrency=1)
    assert submit_action("noop", "noop", {"echo": "before"}).wait(30).status == "succeeded"
    store_db.reset_engine()
    _refuse_audit_writes(sqlite_url)

    refused = opsq(env, "queue", "pause", "noop", "--actor", "dana")
    assert refused.returncode != 0
    assert redis_client.hget(PAUSED, "noop") is None
    view = submit_action("noop", "noop", {"echo": "after"}).wait(30)  # still consumed: the pause was undone
    assert view.status == "succeeded"
    assert "not paused" in _one_clear_line(refused.stderr) and "undone" in refused.stderr
    assert worker.proc is not None and worker.proc.poll() is None


def test_quarantine_changes_whose_audit_write_fails_are_undone(opsq_env_sqlite, sqlite_url, redis_client):
    """The quarantine's drop and requeue change Redis: an entry that cannot be written puts the items back."""
    env = opsq_env_sqlite()
    assert opsq(env, "db", "upgrade").returncode == 0
    store_db.reset_engine()
    items = [json.dumps({"queue": "noop", "reason": "not JSON", "bytes": 3, "head": "", "n": n}).encode()
             for n in range(3)]
    for item in items:
        redis_client.lpush(QUARANTINE_KEY, item)
    before = redis_client.lrange(QUARANTINE_KEY, 0, -1)
    _refuse_audit_writes(sqlite_url)

    refused = opsq(env, "queue", "quarantine", "drop", "--yes", "--actor", "dana")
    assert refused.returncode != 0
    assert "not dropped" in _one_clear_line(refused.stderr)
    assert redis_client.lrange(QUARANTINE_KEY, 0, -1) == before  # all back, in their order
    assert _trail(env, "quarantine_drop") == []
