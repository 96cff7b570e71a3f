"""The retention clean-up (beat.maintenance.cleanup) deletes the API's note of which token submitted an action
(`api_actions`) with the action's record, and the notes left behind before it did; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from beat.maintenance import cleanup
from workers.settings import reload_settings
from workers.store import actions as store
from workers.store import api_tokens, db
from workers.store.models import ActionRun, ApiAction, utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def store_on(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPSQ_DATABASE_URL", database_url)
    reload_settings()
    db.reset_engine()
    return database_url


def _action(action_id: str, finished_days_ago: float) -> None:
    store.create(action_id=action_id, platform="noop", action="noop", params={}, priority="normal", queue="noop",
                 max_attempts=1, actor="test")
    with db.session() as s:
        s.execute(update(ActionRun).where(ActionRun.id == action_id).values(
            status="succeeded", finished_at=utcnow() - timedelta(days=finished_days_ago)))


def test_cleanup_deletes_the_token_notes_of_the_records_it_deletes(store_on):
    for action_id, days in (("old", 60), ("recent", 1)):
        _action(action_id, days)
        api_tokens.own_action(action_id, "ci-bot")
    with db.session() as s:  # a note left behind by a clean-up that did not know of them, and a fresh one
        s.execute(insert(ApiAction).values(action_id="gone-long-ago", token_name="ci-bot",
                                           created_at=utcnow() - timedelta(days=90)))
        s.execute(insert(ApiAction).values(action_id="being-written", token_name="ci-bot", created_at=utcnow()))

    summary = cleanup()

    assert summary["action_records_deleted"] == 1 and summary["api_action_rows_deleted"] == 2
    assert store.find("old") is None and store.find("recent") is not None
    with db.session() as s:
        left = set(s.scalars(select(ApiAction.action_id)))
    assert left == {"recent", "being-written"}
    assert api_tokens.action_owner("recent") == "ci-bot" and api_tokens.action_owner("old") is None
    assert cleanup()["api_action_rows_deleted"] == 0  # nothing more to do
