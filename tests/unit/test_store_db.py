"""workers.store.db: the migrations' head revision and `upgrade`, the engines' connection parameters."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect

from workers.store.db import HEAD_REVISION, PG_CONNECT_TIMEOUT, alembic_config, current_revision, make_engine, upgrade


def test_head_revision_matches_alembic_and_upgrade_creates_tables(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert ScriptDirectory.from_config(alembic_config(engine)).get_current_head() == HEAD_REVISION
    assert current_revision(engine) is None
    assert upgrade(engine) == HEAD_REVISION
    assert {"action_runs", "dead_letters"} <= set(inspect(engine).get_table_names())
    assert upgrade(engine) == HEAD_REVISION  # idempotent


def _connect_params(engine) -> dict:
    """What the engine hands psycopg for a new connection (the URL's query merged with connect_args), without
    connecting: the do_connect event sees the final parameters, and raising there stops before the network."""
    seen: dict = {}

    class _Stop(Exception):
        pass

    @event.listens_for(engine, "do_connect")
    def _capture(_dialect, _record, _cargs, cparams):  # type: ignore[no-untyped-def]
        seen.update(cparams)
        raise _Stop

    with pytest.raises(_Stop):
        engine.connect()
    return seen


def test_a_postgresql_engine_has_a_connect_timeout():
    """A database host that drops packets must not hold a health check or worker for the OS connect timeout."""
    params = _connect_params(make_engine("postgresql+psycopg://opsq@db.example.invalid:5432/opsq"))
    assert params["connect_timeout"] == PG_CONNECT_TIMEOUT
    assert 0 < PG_CONNECT_TIMEOUT <= 30
    # Plain postgresql:// (read as psycopg 3) and the async-commit engine carry it too.
    assert _connect_params(make_engine("postgresql://opsq@db.example.invalid/opsq"))["connect_timeout"] \
        == PG_CONNECT_TIMEOUT
    async_params = _connect_params(make_engine("postgresql+psycopg://opsq@db.example.invalid/opsq", async_commit=True))
    assert async_params["connect_timeout"] == PG_CONNECT_TIMEOUT
    assert "synchronous_commit=off" in async_params["options"]


def test_the_urls_own_connect_timeout_wins():
    params = _connect_params(make_engine("postgresql+psycopg://opsq@db.example.invalid/opsq?connect_timeout=17"))
    assert str(params["connect_timeout"]) == "17"


def test_a_sqlite_engine_gets_no_connect_timeout(tmp_path):
    params = _connect_params(make_engine(f"sqlite:///{tmp_path / 't.db'}"))
    assert "connect_timeout" not in params
