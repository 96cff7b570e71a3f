"""What the commands share: their common options, the params parser, how times and checks are printed."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from workers.priorities import PRIORITY_NAMES

CHECK_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}

priority_option = click.option("--priority", type=click.Choice(PRIORITY_NAMES), default="normal",
                               show_default=True)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

F = TypeVar("F", bound=Callable[..., Any])


def read_only(command: F) -> F:
    """Marks a read command (put it right above the `def`): it writes nothing, not even a migration of an
    older schema. It reads a database whose schema is this opsq's (or newer); any other is refused in one
    line that says to run `opsq db upgrade` (workers.store.db.reading_only). `opsq db` and the commands that
    run or change things migrate as before (OPSQ_AUTO_MIGRATE)."""
    return read_only_since(None)(command)


def read_only_since(revision: str | None) -> Callable[[F], F]:
    """`read_only` for a command whose tables have not changed since `revision`: it also reads a schema that
    old as it is (the audit trail of a copy kept from before an upgrade)."""

    def mark(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            # The store is loaded when a command runs, not for `opsq --help`.
            from workers.store.db import HEAD_REVISION, reading_only

            with reading_only(revision or HEAD_REVISION):
                return command(*args, **kwargs)

        run.opsq_read_only = True  # type: ignore[attr-defined]  # tests/unit/test_cli_read_only.py walks the tree
        return run  # type: ignore[return-value]

    return mark


def _default_actor() -> str:
    # The store (SQLAlchemy, the models) is loaded when a command runs, not for `opsq --help`.
    from workers.store.audit import default_actor

    return default_actor()


actor_option = click.option("--actor", default=_default_actor,
                            show_default="OPSQ_ACTOR or the OS user",
                            help="Who is doing this (recorded in the history).")


def parse_params(pairs: tuple[str, ...], params_json: str | None, hint: str = "--param") -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc.msg} at column {exc.colno}",
                                     param_hint="--params-json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--params-json")
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=hint)
        # A value that parses as JSON (numbers, lists, true) is taken as such; anything else is text.
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value or "-")


def print_checks(checks: list[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2, default=str, sort_keys=True))
        return
    for c in checks:
        mark = click.style(f"{c.status.upper():<4}", fg=CHECK_COLOURS[c.status], bold=True)
        click.echo(f"{mark}  {c.name:<28} {c.detail}")
