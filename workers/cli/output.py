"""Printing for the CLI: JSON for machines, aligned and coloured text for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from workers.status import ActionStatus

STATUS_COLOURS: dict[str, str] = {
    ActionStatus.SUCCEEDED: "green", ActionStatus.QUEUED: "cyan", ActionStatus.RUNNING: "blue",
    ActionStatus.RETRYING: "yellow", ActionStatus.FAILED: "red", ActionStatus.SCHEDULED: "cyan",
    ActionStatus.CANCELLED: "magenta", ActionStatus.EXPIRED: "magenta",
}


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


def status_text(status: str) -> str:
    return click.style(status, fg=STATUS_COLOURS.get(status, "white"), bold=status == ActionStatus.FAILED)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(click.unstyle(row[i])) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(c + " " * (widths[i] - len(click.unstyle(c))) for i, c in enumerate(row))
        click.echo(click.style(line, bold=True) if n == 0 else line.rstrip())
