"""Review fixes against the real databases and Redis: the audit chain in any session time zone, long
audit targets, backups as one snapshot, one replay per dead letter, forked workers and the parent's
database connections."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

from workers.errors import SubmitError
from workers.ops import dlq
from workers.settings import reload_settings
from workers.store import actions as store
from workers.store import audit, db

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url(postgres, monkeypatch) -> str:
    from tests.conftest import _truncate_pg

    if postgres.url is None:
        pytest.skip(f"needs PostgreSQL: {postgres.reason}")
    _truncate_pg(postgres.url)
    monkeypatch.setenv("OPSQ_DATABASE_URL", postgres.url)
    reload_settings()
    db.reset_engine()
    return postgres.url


def _with_session_time_zone(url: str, zone: str) -> str:
    parsed = make_url(url)
    options = parsed.query.get("options", "")
    options = options if isinstance(options, str) else " ".join(options)
    return parsed.update_query_dict({"options": f"{options} -c timezone={zone}".strip()}).render_as_string(
        hide_password=False)


def test_the_audit_chain_verifies_in_any_session_time_zone(pg_url, monkeypatch):
    for i in range(3):
        audit.append("circuit_reset", f"platform:p{i}", {"n": i}, actor="alice")
    assert audit.verify().ok
    monkeypatch.setenv("OPSQ_DATABASE_URL", _with_session_time_zone(pg_url, "America/New_York"))
    reload_settings()
    db.reset_engine()
    with db.get_engine().connect() as conn:
        assert conn.execute(text("SHOW timezone")).scalar() == "America/New_York"
        assert conn.execute(text("SELECT at FROM audit_log LIMIT 1")).scalar().utcoffset().total_seconds() < 0
    verdict = audit.verify()
    assert verdict.ok and verdict.checked == 3, verdict
    audit.append("circuit_reset", "platform:ny", {}, actor="bob")  # written from the New York session too
    assert audit.verify().ok
    assert all(e["at"].utcoffset().total_seconds() == 0 for e in audit.entries())


def test_an_audit_target_longer_than_its_column_is_cut(opsq_env):
    audit.append("backup_restore", "/backups/" + "x" * 300, {"rows": 1}, actor="t")  # PostgreSQL refused it
    (entry,) = audit.entries()
    assert len(entry["target"]) == 200
    assert audit.verify().ok


def test_a_backup_is_one_snapshot_while_writers_carry_on(opsq_env):
    from beat import backup

    for i in range(3):
        audit.append("test", f"before:{i}", {}, actor="t")
    fired: list[str] = []

    def write_between_the_tables(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if fired or not statement.lstrip().upper().startswith("SELECT"):
            return
        if "FROM audit_log" in statement or "FROM audit_head" in statement:
            fired.append(statement)
            audit.append("test", "during the backup", {}, actor="t")  # its own connection, committed

    event.listen(Engine, "after_cursor_execute", write_between_the_tables)
    try:
        data = backup.dump(db.get_engine())
    finally:
        event.remove(Engine, "after_cursor_execute", write_between_the_tables)
    assert fired
    log, (head,) = data["tables"]["audit_log"], data["tables"]["audit_head"]
    # Both tables as they were before the write: the restored chain's head is its last entry.
    assert [e["target"] for e in log] == ["before:0", "before:1", "before:2"]
    assert (head["last_id"], head["last_hash"]) == (log[-1]["id"], log[-1]["hash"])
    assert len(audit.entries()) == 4  # the write did happen


def _dead_letter(action_id: str) -> int:
    store.create(action_id=action_id, platform="noop", action="noop", params={"echo": action_id},
                 priority="normal", queue="noop", max_attempts=1)
    store.mark_failed(action_id, 1, "boom", "internal", dead_letter=True)
    (dead,) = [d for d in store.dead_letters() if d.action_id == action_id]
    return dead.id


def test_two_replays_of_one_dead_letter_make_one_action(opsq_env, monkeypatch):
    dl_id = _dead_letter("dead1")
    submit = dlq.submit_action

    def slow_submit(*args, **kwargs):  # the window in which a second operator replays it too
        time.sleep(0.3)
        return submit(*args, **kwargs)

    monkeypatch.setattr(dlq, "submit_action", slow_submit)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def replay() -> None:
        barrier.wait()
        try:
            outcomes.append(dlq.replay(dl_id, actor="t").id)
        except SubmitError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=replay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replays = [a for a in store.list_recent(limit=20) if a.replay_of == "dead1"]
    assert len(replays) == 1, outcomes
    assert sorted(outcomes, key=lambda o: o.startswith("dead letter")) == [
        replays[0].id, f"dead letter {dl_id} was already replayed (its replay is being submitted now)"]
    assert store.dead_letter(dl_id).replayed_as == replays[0].id
    assert [e["action"] for e in audit.entries()].count("dlq_replay") == 1


def test_a_failed_replay_gives_the_dead_letter_back(opsq_env, monkeypatch):
    dl_id = _dead_letter("dead2")
    submit = dlq.submit_action

    def broker_down(*args, **kwargs):
        raise SubmitError("could not enqueue: broker down")

    monkeypatch.setattr(dlq, "submit_action", broker_down)
    with pytest.raises(SubmitError, match="broker down"):
        dlq.replay(dl_id)
    assert store.dead_letter(dl_id).replayed_at is None
    monkeypatch.setattr(dlq, "submit_action", submit)
    handle = dlq.replay(dl_id)
    dead = store.dead_letter(dl_id)
    assert dead.replayed_as == handle.id and dead.replayed_at is not None
    with pytest.raises(SubmitError, match=f"already replayed as action {handle.id}"):
        dlq.replay(dl_id)


def test_a_forked_worker_child_leaves_the_parents_connections_open(pg_url):
    from workers.celery_app import _fresh_connections_after_fork

    def backend_pids() -> tuple[int, int]:
        with db.get_engine().connect() as conn:
            main = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.outcome_engine().connect() as conn:
            outcome = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        return main, outcome

    before = backend_pids()
    assert db.outcome_engine() is not db.get_engine()  # both engines are in play (async commit)
    child = os.fork()
    if child == 0:  # a Celery prefork child: worker_process_init
        code = 1
        try:
            _fresh_connections_after_fork()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The same server sessions: the child did not close them (pre-ping would have replaced them).
    assert backend_pids() == before
