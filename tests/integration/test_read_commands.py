"""Read commands write nothing (issue 10, item 5), not even a schema migration: pointed at a SQLite database
whose schema is older than this opsq, each says in one line what to do (or, for the audit trail, reads it as
it is) and leaves the file as it was (its Alembic revision, its tables and its rows), OPSQ_AUTO_MIGRATE on
(the default) all the same."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.integration.opsq_cli import opsq
from workers.store.db import HEAD_REVISION, current_revision, make_engine, upgrade

pytestmark = pytest.mark.integration

OLD = "0005"  # any revision older than the code's
READS = [
    ("action", "status", "old-1"), ("action", "list", "--json"), ("dlq", "list"), ("metrics", "--json"),
    ("logs", "errors"), ("analyze", "failures"), ("queue", "stuck"), ("workflow", "list"),
    ("workflow", "status", "wf-1"), ("approvals", "list"), ("alerts", "list"), ("maintenance", "list"),
]
# The trail's tables have not changed since 0004: it is read as it is (a copy kept from before an upgrade).
TRAIL_READS = [("audit", "list", "--json"), ("audit", "verify")]


def _snapshot(engine: Engine) -> dict[str, Any]:
    """What a migration would change: the revision, every table's and index's definition, every row count."""
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")).all()
        counts = {name: conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar()
                  for kind, name, _ in schema if kind == "table"}
    return {"revision": current_revision(engine), "schema": [tuple(r) for r in schema], "rows": counts}


@pytest.fixture
def old_database(tmp_path: Path) -> tuple[str, Engine]:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    assert upgrade(engine, OLD) == OLD
    with engine.begin() as conn:  # a record to read (and to see still there)
        conn.execute(text(
            "INSERT INTO action_runs (id, platform, action, params, priority, queue, status, attempts, max_attempts, "
            "created_at, updated_at) VALUES ('old-1', 'noop', 'noop', '{}', 'normal', 'noop', 'succeeded', 1, 5, "
            "'2026-11-30 12:00:00', '2026-11-30 12:00:00')"))
    return url, engine


def test_read_commands_leave_an_old_schema_as_it_was_and_say_to_upgrade(opsq_env_sqlite, old_database):
    url, engine = old_database
    env = opsq_env_sqlite(OPSQ_DATABASE_URL=url)
    assert "OPSQ_AUTO_MIGRATE" not in env  # the default: true
    before = _snapshot(engine)
    assert before["revision"] == OLD and before["rows"]["action_runs"] == 1

    for args in READS:
        out = opsq(env, *args)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert out.returncode == 1 and len(lines) == 1, (args, out.stderr)
        assert (f"the schema is at revision {OLD}, this opsq needs {HEAD_REVISION}: run `opsq db upgrade`"
                in lines[0]), (args, lines[0])
        assert _snapshot(engine) == before, args

    for args in TRAIL_READS:
        out = opsq(env, *args)
        assert out.returncode == 0, (args, out.stderr)
        assert _snapshot(engine) == before, args

    # health reads too: it names the schema as its database check, and migrates nothing either.
    health = opsq(env, "health", "--json")
    assert health.returncode == 1
    (database,) = [c for c in json.loads(health.stdout) if c["name"] == "database"]
    assert database["status"] == "fail" and f"schema at {OLD}, needs {HEAD_REVISION}" in database["detail"]
    assert _snapshot(engine) == before

    # What the line says to do works, and then the same commands read.
    upgraded = opsq(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert current_revision(engine) == HEAD_REVISION
    listed = opsq(env, "action", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["id"] for a in json.loads(listed.stdout)] == ["old-1"]

    # A newer opsq migrated it meanwhile (a rolling upgrade): reads go on, and health says this host is behind.
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    listed = opsq(env, "action", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    health = opsq(env, "health", "--json")
    (database,) = [c for c in json.loads(health.stdout) if c["name"] == "database"]
    assert database["status"] == "warn" and "newer than this opsq's" in database["detail"], database
    engine.dispose()


def test_a_read_command_creates_no_database(opsq_env_sqlite, tmp_path):
    missing = tmp_path / "nothing-here" / "opsq.db"
    env = opsq_env_sqlite(OPSQ_DATABASE_URL=f"sqlite:///{missing}")
    out = opsq(env, "action", "list")
    assert out.returncode == 1
    assert "has no opsqueue schema" in out.stderr and "`opsq db upgrade` creates it" in out.stderr, out.stderr
    assert not missing.exists() and not missing.parent.exists()
    out = opsq(env, "db", "current")
    assert out.returncode == 0, out.stderr
    assert "does not exist" in out.stdout and "opsq db upgrade" in out.stdout
    assert not missing.exists() and not missing.parent.exists()


def test_read_commands_keep_a_copy_in_its_journal_mode(opsq_env_sqlite, tmp_path):
    """A copy of the store kept for an investigation, in SQLite's default rollback journal (as `.backup` or a
    plain copy of a database that was never opened in WAL leaves it): reading it must not switch it to WAL,
    which rewrites its header and adds -wal and -shm files beside it."""
    path = tmp_path / "copy.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    header = path.read_bytes()[:100]
    env = opsq_env_sqlite(OPSQ_DATABASE_URL=url)
    for args in (("action", "list"), ("db", "current"), ("audit", "verify")):
        out = opsq(env, *args)
        assert out.returncode == 0, (args, out.stderr)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert path.read_bytes()[:100] == header
    assert not (tmp_path / "copy.db-wal").exists()
