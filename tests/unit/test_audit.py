"""workers.store.audit: the hash does not depend on the reading session's zone; targets fit their column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from workers.settings import reload_settings
from workers.store import audit, db
from workers.store.audit import digest


def test_audit_digest_does_not_depend_on_the_zone_it_was_read_in():
    at = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    as_read_in_new_york = at.astimezone(timezone(timedelta(hours=-4)))
    assert digest("0" * 64, at, "a", "x", None, {}) == digest("0" * 64, as_read_in_new_york, "a", "x", None, {})
    assert digest("0" * 64, at, "a", "x", None, {}) == digest("0" * 64, at.replace(tzinfo=None), "a", "x", None, {})


def test_long_audit_targets_are_cut_to_the_column(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 'a.db'}")
    reload_settings()
    db.reset_engine()
    audit.append("backup_restore", "/very/long/path/" + "x" * 400, {"rows": 1}, actor="t")
    (entry,) = audit.entries()
    assert len(entry["target"]) == 200 and entry["target"].startswith("/very/long/path/xxx")
    assert audit.verify().ok
