"""Backups on the real databases: one snapshot while writers carry on, and a restore into an empty
database (of the other kind too) with identical contents."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, event

# Their tables on the shared Base: `backup.dump` in this process reads only the tables it has imported
# (beat.backup does not import them itself: see the xfail in tests/unit/test_backup.py).
from beat import backup
from tests.integration.opsq_cli import opsq
from workers.client import submit_action
from workers.store import audit, db
from workers.store.db import make_engine

pytestmark = pytest.mark.integration


def test_a_backup_is_one_snapshot_while_writers_carry_on(opsq_env):
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


def test_backup_restores_into_an_empty_database_with_identical_contents(opsq_env, workers_started, tmp_path,
                                                                        database_url):
    env = opsq_env(OPSQ_BACKUP_DIR=str(tmp_path / "backups"))
    workers_started(env, queues="noop,control")
    for i in range(5):
        submit_action("noop", "noop", {"echo": i}).wait(30)
    out = opsq(env, "maintenance", "run", "backup_state")
    assert out.returncode == 0, out.stderr
    (item,) = backup.list_backups(tmp_path / "backups")
    empty = f"sqlite:///{tmp_path / 'restored.db'}"
    out = opsq({**env, "OPSQ_DATABASE_URL": empty}, "backup", "restore", item["path"], "--yes")
    assert out.returncode == 0 and "restored" in out.stdout, out.stderr
    original = backup.load(Path(item["path"]))["tables"]
    restored_engine = make_engine(empty)
    restored = backup.dump(restored_engine)["tables"]
    restored_engine.dispose()
    for table, rows in original.items():
        if table in ("audit_log", "audit_head"):
            # the restore itself is audited, on top of the restored chain
            assert restored[table][: len(rows) - (table == "audit_head")] == rows[: len(rows) - (table == "audit_head")]
            continue
        assert restored[table] == rows, table
    assert len(original["action_runs"]) == 5
    again = opsq({**env, "OPSQ_DATABASE_URL": empty}, "backup", "restore", item["path"], "--yes")
    assert again.returncode != 0 and "not empty" in again.stderr
