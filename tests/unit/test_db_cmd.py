"""workers.cli.db_cmd: `opsq db downgrade` undoes the newer migrations (rolling an upgrade back), only with --yes."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import inspect

from workers.cli.main import cli, register
from workers.settings import reload_settings
from workers.store.db import HEAD_REVISION, current_revision, make_engine, reset_engine


def test_db_downgrade_needs_yes_then_undoes_the_newer_migrations(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    monkeypatch.setenv("OPSQ_DATABASE_URL", url)
    monkeypatch.setenv("OPSQ_AUTO_MIGRATE", "false")
    reload_settings()
    reset_engine()
    register()
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    engine = make_engine(url)
    assert current_revision(engine) == HEAD_REVISION

    refused = runner.invoke(cli, ["db", "downgrade", "0004"])
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert current_revision(engine) == HEAD_REVISION

    done = runner.invoke(cli, ["db", "downgrade", "0004", "--yes"])
    assert done.exit_code == 0, done.output
    assert f"downgraded from revision {HEAD_REVISION} to 0004" in done.output
    assert current_revision(engine) == "0004"
    assert "workflow_id" not in {c["name"] for c in inspect(engine).get_columns("action_runs")}

    unknown = runner.invoke(cli, ["db", "downgrade", "9999", "--yes"])
    assert unknown.exit_code == 1 and "cannot downgrade" in unknown.output

    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert current_revision(engine) == HEAD_REVISION
