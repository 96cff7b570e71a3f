"""workers.store.actions against a SQLite store: what an action record keeps."""

from __future__ import annotations

from workers.settings import reload_settings
from workers.store import actions as store
from workers.store import db
from workers.store.models import utcnow


def test_action_records_keep_utc_times_on_sqlite(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 't.db'}")
    reload_settings()
    db.reset_engine()
    store.create(action_id="a1", platform="noop", action="noop", params={"token": "s3cret", "x": 1},
                 priority="normal", queue="noop", max_attempts=3)
    started = utcnow()
    store.mark_succeeded("a1", 1, {"ok": True}, started)
    view = store.get("a1")
    assert view.status == "succeeded" and view.started_at == started
    assert view.created_at.tzinfo is not None and view.duration_s is not None and view.duration_s >= 0
    assert view.params == {"token": "[redacted]", "x": 1}
