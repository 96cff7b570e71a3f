"""opsq db upgrade / current."""

from __future__ import annotations

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

@db.command("current")
def db_current() -> None:
    """Print the schema revision."""
    from workers.settings import get_settings
    from workers.store.db import current_revision, make_engine

    engine = make_engine(get_settings().resolved_database_url)
    click.echo(current_revision(engine) or "not migrated (run `opsq db upgrade`)")


def register(cli: click.Group) -> None:
    cli.add_command(db)
