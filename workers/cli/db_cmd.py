"""opsq db upgrade / downgrade / current."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def db() -> None:
    """The state store (SQLite by default, PostgreSQL with OPSQ_DATABASE_URL)."""

@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations."""
    from workers.settings import get_settings
    from workers.store.db import make_engine, upgrade

    url = get_settings().resolved_database_url
    engine = make_engine(url)
    rev = upgrade(engine)
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision {rev}")

@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Really undo the newer migrations (their columns and tables go).")
def db_downgrade(revision: str, yes: bool) -> None:
    """Undo the migrations newer than REVISION, to run an older opsqueue again. Run it with the NEWER
    version's code (only it knows how to undo its migrations), every other opsqueue process stopped."""
    from alembic import command
    from alembic.util import CommandError

    from workers.errors import OpsqError
    from workers.settings import get_settings
    from workers.store.db import HEAD_REVISION, current_revision, make_engine
    from workers.store.db import alembic_config as config

    if not yes:
        raise click.UsageError(f"this undoes every migration after {revision} (the data in what they added is "
                               "lost); take a backup first, stop every opsqueue process, and add --yes")
    engine = make_engine(get_settings().resolved_database_url)
    name = engine.url.render_as_string(hide_password=True)
    before = current_revision(engine)
    if before is None:
        raise OpsqError(f"database {name} is not migrated: nothing to downgrade")
    try:
        command.downgrade(config(engine), revision)
    except CommandError as exc:
        raise OpsqError(f"cannot downgrade {name} to {revision}: {exc} (revisions: 0001 to {HEAD_REVISION})"
                        ) from None
    after = current_revision(engine) or "nothing (every table dropped)"
    click.echo(f"database {name} downgraded from revision {before} to {after}; processes of this version "
               f"would migrate it back when they start (OPSQ_AUTO_MIGRATE)")

@db.command("current")
def db_current() -> None:
    """Print the schema revision (reads only: a missing SQLite file is not created)."""
    from sqlalchemy.engine import make_url

    from workers.settings import get_settings
    from workers.store.db import current_revision, make_engine

    url = make_url(get_settings().resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(str(url.database)).exists():
        click.echo(f"not migrated: {url.database} does not exist (run `opsq db upgrade`)")
        return
    engine = make_engine(url.render_as_string(hide_password=False), reading=True)
    click.echo(current_revision(engine) or "not migrated (run `opsq db upgrade`)")


def register(cli: click.Group) -> None:
    cli.add_command(db)
