"""beat.backup against SQLite stores: a backup round-trips rows and times into an empty database, a
database with data is only replaced when forced, files that are not backups are refused, old backups
are pruned."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect

from beat import backup
from workers.settings import reload_settings
from workers.store import actions as store
from workers.store import audit, db
from workers.store.db import make_engine, upgrade
from workers.store.models import utcnow

ROOT = Path(__file__).resolve().parents[2]
WORKER_TABLES = ("action_runs", "dead_letters", "audit_log", "audit_head", "audit_pending")


def _use_store(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("OPSQ_DATABASE_URL", url)
    reload_settings()
    db.reset_engine()


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite store with a succeeded action, a dead letter, their submits' audit entries and one more."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    _use_store(monkeypatch, url)
    store.create(action_id="ok1", platform="noop", action="noop", params={"echo": 1}, priority="high",
                 queue="noop", max_attempts=3)
    store.mark_succeeded("ok1", 1, {"echo": 1}, utcnow())
    store.create(action_id="dead1", platform="slack", action="send_message", params={"channel": "#a", "text": "x"},
                 priority="normal", queue="slack", max_attempts=2)
    store.mark_failed("dead1", 2, "502", "retryable")
    audit.append("circuit_reset", "platform:slack", {"why": "test"}, actor="alice")
    return url


def test_a_backup_round_trips_rows_and_times_into_an_empty_database(source, tmp_path, monkeypatch):
    path = backup.create(tmp_path / "backups")
    assert path.parent == tmp_path / "backups" and path.name.startswith("opsq-backup-")
    assert path.name.endswith(".json.gz") and not list(path.parent.glob("*.tmp"))  # written, then renamed
    before = backup.dump(db.get_engine())
    assert before["format"] == backup.FORMAT and before["revision"] == db.HEAD_REVISION
    assert {r["id"] for r in before["tables"]["action_runs"]} == {"ok1", "dead1"}
    assert before["tables"]["action_runs"][0]["created_at"].keys() == {"$dt"}  # times kept as tagged ISO text

    _use_store(monkeypatch, f"sqlite:///{tmp_path / 'target.db'}")
    counts = backup.restore(path)
    assert counts["action_runs"] == 2 and counts["dead_letters"] == 1 and counts["audit_log"] == 3
    after = backup.dump(db.get_engine())
    for table in ("action_runs", "dead_letters"):
        assert after["tables"][table] == before["tables"][table], table
    view = store.get("ok1")
    assert view.status == "succeeded" and view.created_at.tzinfo is not None and view.priority == "high"
    (dead,) = store.dead_letters()
    assert (dead.action_id, dead.attempts, dead.error_kind) == ("dead1", 2, "retryable")
    # The restored chain still verifies, with the restore itself appended to it.
    assert [e["action"] for e in audit.entries()] == ["submit", "submit", "circuit_reset", "backup_restore"]
    assert audit.verify().ok


def test_a_database_with_data_is_replaced_only_when_forced(source, tmp_path, monkeypatch):
    path = backup.create(tmp_path / "backups")
    store.create(action_id="later", platform="noop", action="noop", params={}, priority="normal", queue="noop",
                 max_attempts=1)
    with pytest.raises(ValueError, match="the database is not empty"):
        backup.restore(path)
    assert store.find("later") is not None  # refused before anything was deleted
    counts = backup.restore(path, force=True)
    assert counts["action_runs"] == 2 and store.find("later") is None


def test_what_is_not_a_backup_is_refused(tmp_path):
    text = tmp_path / "notes.json.gz"
    text.write_text("plain text, not gzip")
    with pytest.raises(ValueError, match="is not an opsqueue backup"):
        backup.load(text)
    other = tmp_path / "other.json.gz"
    with gzip.open(other, "wt", encoding="utf-8") as fh:
        json.dump({"format": "someone-else/2", "tables": {}}, fh)
    with pytest.raises(ValueError, match=r"is not an opsqueue backup \(format 'someone-else/2'\)"):
        backup.load(other)


def test_backups_are_listed_oldest_first_and_pruned_by_age(tmp_path):
    directory = tmp_path / "backups"
    assert backup.list_backups(directory) == []  # no directory yet
    directory.mkdir()
    now = time.time()
    ages_days = {"opsq-backup-20240101T000000Z.json.gz": 30, "opsq-backup-20240120T000000Z.json.gz": 10,
                 "opsq-backup-20240129T000000Z.json.gz": 1}
    for name, age in ages_days.items():
        (directory / name).write_bytes(b"x" * age)
        os.utime(directory / name, (now - age * 86400, now - age * 86400))
    (directory / "unrelated.json.gz").write_bytes(b"keep")
    listed = backup.list_backups(directory)
    assert [Path(i["path"]).name for i in listed] == sorted(ages_days)
    assert [i["bytes"] for i in listed] == [30, 10, 1]
    removed = backup.prune(14, directory)
    assert [Path(p).name for p in removed] == ["opsq-backup-20240101T000000Z.json.gz"]
    assert sorted(p.name for p in directory.iterdir()) == ["opsq-backup-20240120T000000Z.json.gz",
                                                          "opsq-backup-20240129T000000Z.json.gz", "unrelated.json.gz"]


def test_a_process_that_imports_only_beat_backup_dumps_every_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'all.db'}"
    engine = make_engine(url)
    upgrade(engine)
    migrated = set(inspect(engine).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert set(WORKER_TABLES) < migrated  # the other layers' tables are migrated too
    code = ("import json, sys\nfrom beat import backup\nfrom workers.store.db import make_engine\n"
            "print(json.dumps(sorted(backup.dump(make_engine(sys.argv[1]))['tables'])))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=60, check=True)
    assert set(json.loads(out.stdout)) == migrated


def test_a_backup_from_before_migration_0005_is_converted_on_restore(tmp_path, monkeypatch):
    """A backup written at revision 0004 (before action_runs.workflow_id and the skipped status) comes back
    as migration 0005 would have left it: the stuck detector can tell the workflow's steps again."""
    now = {"$dt": "2026-11-30T12:00:00+00:00"}
    run = {"params": {}, "priority": "normal", "attempts": 1, "max_attempts": 5, "result": None, "error": None,
           "idempotency_key": None, "replay_of": None, "created_at": now, "started_at": None, "finished_at": None,
           "next_attempt_at": None, "updated_at": now, "platform": "noop", "action": "noop", "queue": "noop"}
    data: dict = {"format": backup.FORMAT, "created_at": "2026-11-30T12:00:00+00:00", "revision": "0004",
                  "tables": {}}  # as backup.dump wrote it at 0004: action_runs without workflow_id, fail_fast
    data["tables"]["workflow_runs"] = [{"id": "wf1", "name": "w", "spec": {}, "input": {}, "priority": "normal",
                                        "status": "rolled_back", "idempotency_key": None, "error": None,
                                        "failed_step": None, "resume_level": 0, "resolution_note": None,
                                        "created_by": None, "created_at": now, "updated_at": now,
                                        "finished_at": None}]
    data["tables"]["workflow_steps"] = [{"workflow_id": "wf1", "step_id": "a", "action_id": "step-a",
                                         "platform": "noop", "action": "noop", "level": 0, "status": "skipped",
                                         "params": None, "output": None, "error": None, "attempts": 0,
                                         "completed_seq": None, "started_at": None, "finished_at": None}]
    data["tables"]["action_runs"] = [{**run, "id": "step-a", "status": "failed", "error_kind": "skipped"},
                                     {**run, "id": "alone", "status": "failed", "error_kind": "auth"}]
    path = tmp_path / "opsq-backup-old.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(data, fh)

    _use_store(monkeypatch, f"sqlite:///{tmp_path / 'new.db'}")
    backup.restore(path)

    with db.get_engine().connect() as conn:
        rows = {r.id: (r.status, r.error_kind, r.workflow_id, r.fail_fast) for r in conn.exec_driver_sql(
            "SELECT id, status, error_kind, workflow_id, fail_fast FROM action_runs")}
    assert rows == {"step-a": ("skipped", None, "wf1", False), "alone": ("failed", "auth", None, False)}
