"""workers.store.db: the migrations' head revision and `upgrade`."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from workers.store.db import HEAD_REVISION, alembic_config, current_revision, make_engine, upgrade


def test_head_revision_matches_alembic_and_upgrade_creates_tables(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert ScriptDirectory.from_config(alembic_config(engine)).get_current_head() == HEAD_REVISION
    assert current_revision(engine) is None
    assert upgrade(engine) == HEAD_REVISION
    assert {"action_runs", "dead_letters"} <= set(inspect(engine).get_table_names())
    assert upgrade(engine) == HEAD_REVISION  # idempotent
