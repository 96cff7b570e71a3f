"""workers.cli.options.read_only: every read command carries it (so it never migrates the database it reads),
no command that changes something does."""

from __future__ import annotations

from collections.abc import Iterator

import click

from workers.cli.main import cli, register

# They print what they did as JSON, but they submit: they may migrate as any writer does.
WRITERS_WITH_JSON = {"submit", "workflow run", "action cancel", "dlq replay", "api token create"}


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def _read_only(command: click.Command) -> bool:
    return bool(getattr(command.callback, "opsq_read_only", False))


def test_every_read_command_is_read_only_and_no_writer_is():
    register()
    options = {name: {p.name for p in command.params} for name, command in _commands(cli)}
    marked = {name for name, command in _commands(cli) if _read_only(command)}
    # A read command takes --json (CONTRIBUTING); a command that changes state takes --actor.
    readers = {name for name, opts in options.items() if "as_json" in opts} - WRITERS_WITH_JSON
    assert readers - marked == set()
    assert {name for name in marked if "actor" in options[name]} == set()
    assert marked & {"db upgrade", "worker", "beat", "maintenance run", "backup create", "backup restore"} == set()
