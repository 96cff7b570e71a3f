"""opsq audit: the append-only, hash-chained audit trail."""

from __future__ import annotations

import json

import click

from workers.cli.options import json_option, read_only_since, ts
from workers.cli.output import emit_json, table


@click.group()
def audit() -> None:
    """The append-only, hash-chained audit trail."""

# The trail's tables are as 0004 left them: a copy kept from before a later upgrade (an investigation, E2)
# is read as it is.
TRAIL_SINCE = "0004"

@audit.command("list")
@click.option("--since", help="Only entries this recent: 15m, 24h, 7d.")
@click.option("--action", "action_name", help="Only this operation (submit, approve, circuit_reset, ...).")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@json_option
@read_only_since(TRAIL_SINCE)
def audit_list(since: str | None, action_name: str | None, limit: int, as_json: bool) -> None:
    """Who did what, when, on what (oldest first). Entries not chained yet show `pending`. Writes nothing."""
    from workers.ops.reports import parse_since
    from workers.store import audit as trail

    rows = trail.entries(since=parse_since(since) if since else None, action=action_name, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(["ID", "TIME (UTC)", "ACTOR", "OPERATION", "ON", "DETAIL"],
          [["pending" if r["pending"] else r["id"], ts(r["at"]), r["actor"], r["action"], r["target"] or "",
            json.dumps(r["detail"], sort_keys=True)[:70]] for r in rows])

@audit.command("verify")
@json_option
@read_only_since(TRAIL_SINCE)
def audit_verify(as_json: bool) -> None:
    """Check the hash chain; names the first tampered entry. Exit 1 if tampered. Writes nothing."""
    from workers.store import audit as trail

    verdict = trail.verify()
    if as_json:
        emit_json(verdict.to_dict())
    elif verdict.ok:
        click.echo(click.style("OK", fg="green", bold=True) + f"  {verdict.checked} entries, chain intact"
                   + (f" ({verdict.pending} pending, chained by the next seal)" if verdict.pending else ""))
    else:
        click.echo(click.style("TAMPERED", fg="red", bold=True)
                   + f"  first bad entry: id {verdict.first_bad_id}: {verdict.reason} "
                     f"({verdict.checked} entries before it are intact)")
    if not verdict.ok:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(audit)
