"""Migrations convert the rows that were there, on SQLite and on a PostgreSQL schema of its own. 0005: a skipped
step's record (stored as `failed` with kind `skipped` before) becomes `skipped`, and each step's action record
learns its workflow. 0011: API tokens get an owner (none for the tokens there were)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.support.services import PostgresService
from workers.store.db import HEAD_REVISION, make_engine, upgrade

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        yield engine
        engine.dispose()
        return
    postgres: PostgresService = request.getfixturevalue("postgres")
    if postgres.url is None:
        pytest.skip(f"needs PostgreSQL: {postgres.reason}")
    schema = f"opsq_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres.url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres.url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = make_engine(url.render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _action(conn, action_id: str, status: str, error_kind: str | None) -> None:
    conn.execute(text(
        "INSERT INTO action_runs (id, platform, action, params, priority, queue, status, attempts, max_attempts, "
        "error_kind, created_at, updated_at) VALUES (:id, 'noop', 'noop', '{}', 'normal', 'noop', :status, 1, 5, "
        ":kind, :now, :now)"), {"id": action_id, "status": status, "kind": error_kind, "now": NOW})


def test_0005_marks_skipped_records_and_links_steps_to_their_workflow(empty_engine):
    assert upgrade(empty_engine, "0004") == "0004"
    with empty_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO workflow_runs (id, name, spec, input, priority, status, resume_level, created_at, updated_at) "
            "VALUES ('wf1', 'w', '{}', '{}', 'normal', 'rolled_back', 0, :now, :now)"), {"now": NOW})
        for step, action_id in (("a", "step-a"), ("b", "step-b")):
            conn.execute(text(
                "INSERT INTO workflow_steps (workflow_id, step_id, action_id, platform, action, level, status, "
                "attempts) VALUES ('wf1', :step, :aid, 'noop', 'noop', 0, 'skipped', 0)"),
                {"step": step, "aid": action_id})
        _action(conn, "step-a", "failed", "skipped")  # a step a rollback skipped, the old way
        _action(conn, "step-b", "failed", "permanent")  # a step that really failed
        _action(conn, "alone", "failed", "auth")  # a standalone action
        _action(conn, "done", "succeeded", None)

    assert upgrade(empty_engine) == HEAD_REVISION

    with empty_engine.connect() as conn:
        rows = {r.id: (r.status, r.error_kind, r.workflow_id, bool(r.fail_fast)) for r in conn.execute(text(
            "SELECT id, status, error_kind, workflow_id, fail_fast FROM action_runs"))}
    assert rows == {
        "step-a": ("skipped", None, "wf1", False),  # as workers.store.actions.mark_skipped writes it
        "step-b": ("failed", "permanent", "wf1", False),
        "alone": ("failed", "auth", None, False),
        "done": ("succeeded", None, None, False),
    }


def test_0011_gives_api_tokens_an_owner_and_keeps_the_tokens_there_were(empty_engine):
    assert upgrade(empty_engine, "0010") == "0010"
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO api_tokens (name, role, secret_hash, created_at) VALUES "
                          "('ci', 'submit', :h, :now)"), {"h": "a" * 64, "now": NOW})

    assert upgrade(empty_engine) == HEAD_REVISION == "0011"

    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO api_tokens (name, role, secret_hash, created_at, owner) VALUES "
                          "('dana-bot', 'admin', :h, :now, 'dana')"), {"h": "b" * 64, "now": NOW})
        rows = {r.name: (r.role, r.owner) for r in conn.execute(text("SELECT name, role, owner FROM api_tokens"))}
    assert rows == {"ci": ("submit", None), "dana-bot": ("admin", "dana")}
