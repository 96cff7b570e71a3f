"""What the commands share: their common options, the params parser, how times and checks are printed."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from workers.priorities import PRIORITY_NAMES

CHECK_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}

priority_option = click.option("--priority", type=click.Choice(PRIORITY_NAMES), default="normal",
                               show_default=True)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
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
