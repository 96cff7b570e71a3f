"""opsq dlq list / replay."""

from __future__ import annotations

import click

from workers.cli.options import actor_option, json_option, parse_params, read_only
from workers.cli.output import emit_json, table


@click.group()
def dlq() -> None:
    """Dead letters: actions whose retries ran out or whose credentials were refused."""

@dlq.command("list")
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed ones.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@json_option
@read_only
def dlq_list(include_replayed: bool, limit: int, as_json: bool) -> None:
    """Dead letters, newest first; and how many queue items are quarantined (opsq queue quarantine list)."""
    from workers.ops.dlq import quarantined_note
    from workers.store import actions as store

    items = store.dead_letters(include_replayed=include_replayed, limit=limit)
    # Messages a worker could not deliver or run are not dead letters (they never were an attempt): say how
    # many are quarantined, on stderr with --json so the list stays one JSON document.
    note = quarantined_note()
    if as_json:
        emit_json([d.to_dict() for d in items])
        if note:
            click.echo(note, err=True)
        return
    if not items:
        click.echo("no dead letters")
    else:
        table(["ID", "ACTION ID", "PLATFORM", "ACTION", "ATTEMPTS", "ERROR", "REPLAYED AS"],
              [[d.id, d.action_id, d.platform, d.action, d.attempts, f"[{d.error_kind}] {d.error[:70]}",
                d.replayed_as or ""] for d in items])
    if note:
        click.echo(note)

@dlq.command("replay")
@click.argument("dl_id", type=int)
@click.option("--param", "-p", "pairs", multiple=True, metavar="K=V",
              help="Override a param (e.g. a secret that was not stored).")
@click.option("--params-json", help="Params to override, as one JSON object.")
@actor_option
def dlq_replay(dl_id: int, pairs: tuple[str, ...], params_json: str | None, actor: str) -> None:
    """Enqueue a dead letter again as a new action."""
    from workers.ops.dlq import replay

    handle = replay(dl_id, parse_params(pairs, params_json) or None, actor)
    click.echo(f"replayed dead letter {dl_id} as action {handle.id}")


def register(cli: click.Group) -> None:
    cli.add_command(dlq)
