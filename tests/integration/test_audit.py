"""The audit trail on the real databases: the chain verifies in any session time zone, long targets are
cut to their column, and a tampered row is found (by `opsq audit verify` and the beat job)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from beat.alerts import alerts
from tests.integration.opsq_cli import opsq
from workers.client import submit_action
from workers.settings import reload_settings
from workers.store import audit, db
from workers.store.db import get_engine

pytestmark = pytest.mark.integration


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


def test_a_tampered_audit_row_is_found(opsq_env, workers_started):
    env = opsq_env()
    for i in range(3):
        submit_action("noop", "noop", {"echo": i})
    out = opsq(env, "circuit", "reset", "slack", "--reason", "test", "--actor", "alice")
    assert out.returncode == 0
    ok = opsq(env, "audit", "verify")
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    entries = audit.entries()
    assert [e["action"] for e in entries] == ["submit", "submit", "submit", "circuit_reset"]
    assert entries[-1]["actor"] == "alice"
    with get_engine().begin() as conn:  # someone rewrites history
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = 2"))
    bad = opsq(env, "audit", "verify")
    assert bad.returncode == 1 and "first bad entry: id 2" in bad.stdout
    job = opsq(env, "maintenance", "run", "verify_audit")
    assert '"first_bad_id": 2' in job.stdout
    assert any(a["key"] == "audit_chain" and a["state"] == "firing" for a in alerts())
