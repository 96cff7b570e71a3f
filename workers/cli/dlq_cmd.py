"""opsq dlq list / replay."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from workers.cli.options import actor_option, json_option, parse_params, read_only
from workers.cli.output import emit_json, table
from workers.errors import OpsqError

if TYPE_CHECKING:
    from workers.ops.dlq import Candidate, ReplayFilter


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
@click.argument("dl_id", type=int, required=False)
@click.option("--param", "-p", "pairs", multiple=True, metavar="K=V",
              help="Override a param (e.g. a secret that was not stored). DL_ID only.")
@click.option("--params-json", help="Params to override, as one JSON object. DL_ID only.")
@click.option("--platform", help="Bulk: the dead letters of this platform.")
@click.option("--error-kind", help="Bulk: those that failed with this error kind (auth, retryable, ...).")
@click.option("--action", "action_name", metavar="ACTION", help="Bulk: those of this action (send_message, ...).")
@click.option("--since", metavar="DURATION", help="Bulk: those dead-lettered in the last 15m, 2h, 7d...")
@click.option("--all", "every", is_flag=True, help="Bulk: every dead letter (when no filter is given).")
@click.option("--limit", type=click.IntRange(1, 100000), help="Bulk: at most this many, the oldest first.")
@click.option("--dry-run", is_flag=True, help="List what would be replayed; change nothing.")
@click.option("--yes", is_flag=True, help="Bulk: really replay them.")
@json_option
@actor_option
def dlq_replay(dl_id: int | None, pairs: tuple[str, ...], params_json: str | None, platform: str | None,
               error_kind: str | None, action_name: str | None, since: str | None, every: bool, limit: int | None,
               dry_run: bool, yes: bool, as_json: bool, actor: str) -> None:
    """Enqueue dead letters again, each as a new action linked to the dead one (replay_of).

    One: DL_ID. In bulk: the dead letters not replayed yet that match every filter given, oldest first
    (--all for every one); --dry-run lists them, --yes replays them. Each is replayed once, even when two
    operators replay at the same moment."""
    from workers.ops import dlq as ops
    from workers.redaction import contains_redacted
    from workers.store import actions as store

    bulk_given = any(v is not None for v in (platform, error_kind, action_name, since, limit)) or every
    if dl_id is not None:
        if bulk_given:
            raise click.UsageError("give DL_ID or filters (--platform, --error-kind, --action, --since, --all, "
                                   "--limit), not both")
        override = parse_params(pairs, params_json) or None
        if dry_run:
            dead = store.dead_letter(dl_id)
            if dead.replayed_at is not None:
                raise OpsqError(f"dead letter {dl_id} was already replayed as action "
                                f"{dead.replayed_as or '(being submitted now)'}")
            blocked = ops.SECRET_PARAMS if contains_redacted({**dead.params, **(override or {})}) else None
            _print_candidates([ops.Candidate(dead, ops.idempotent(dead.platform, dead.action), blocked)], as_json)
            return
        handle = ops.replay(dl_id, override, actor)
        if as_json:
            emit_json(ops.BulkReplay(replayed=[(dl_id, store.dead_letter(dl_id).action_id, handle.id)]).to_dict())
        else:
            click.echo(f"replayed dead letter {dl_id} as action {handle.id}")
        return
    if pairs or params_json:
        raise click.UsageError("-p/--params-json change one dead letter's params: give its DL_ID")
    try:
        flt = ops.replay_filter(platform=platform, error_kind=error_kind, action=action_name, since=since,
                                limit=limit, every=every)
    except ops.BadFilter as exc:
        if exc.option is None:
            raise click.UsageError(exc.message) from None
        raise click.BadParameter(exc.message, param_hint=exc.option) from None
    if dry_run:
        _print_candidates(ops.matching(flt), as_json, flt)
        return
    if not yes:
        n = sum(1 for c in ops.matching(flt) if not c.blocked)
        raise click.UsageError(f"this replays {n} dead letter(s); add --dry-run to list them, --yes to do it")
    result = ops.replay_many(flt, actor)
    if as_json:
        emit_json(result.to_dict())
    else:
        for dl, _old, new in result.replayed:
            click.echo(f"replayed dead letter {dl} as action {new}")
        for dl, why in result.skipped:
            click.echo(f"skipped dead letter {dl}: {why}")
        click.echo(f"replayed {len(result.replayed)}, skipped {len(result.skipped)}"
                   + (f", not reached {result.left}" if result.stopped else ""))
    if result.stopped:
        # The summary above is what happened; the error says why the rest did not, and the exit code that it did not.
        raise OpsqError(f"stopped: {result.stopped}; {result.left} dead letter(s) left as they were (the same "
                        "command replays them; those replayed are not replayed twice)")


def _print_candidates(items: list[Candidate], as_json: bool, flt: ReplayFilter | None = None) -> None:
    """The dry run: exactly the dead letters the same command with --yes takes, and what to know about each."""
    from workers.ops.dlq import age

    if as_json:
        emit_json({"dry_run": True, "filter": flt.describe() if flt is not None else None,
                   "dead_letters": [c.to_dict() for c in items]})
        return
    if not items:
        click.echo("no dead letters match")
        return
    table(["ID", "ACTION ID", "PLATFORM", "ACTION", "ERROR KIND", "AGE", "IDEMPOTENT", "NOTE"],
          [[c.dead_letter.id, c.dead_letter.action_id, c.dead_letter.platform, c.dead_letter.action,
            c.dead_letter.error_kind, age(c.dead_letter.created_at),
            {True: "yes", False: "no", None: "unknown"}[c.idempotent], c.blocked or ""] for c in items])
    blocked = sum(1 for c in items if c.blocked)
    risky = sum(1 for c in items if c.idempotent is not True and not c.blocked)
    click.echo(f"{len(items) - blocked} dead letter(s) would be replayed"
               + (f", {blocked} skipped (NOTE)" if blocked else "") + "; nothing was changed (dry run)")
    if risky:
        click.echo(f"{risky} not idempotent: if the first run did act (a lost answer, a timeout), the replay acts "
                   "again; check those on the platform first (docs/RUNBOOK.md, Dead letters)")


def register(cli: click.Group) -> None:
    cli.add_command(dlq)
