"""opsq audit: the append-only, hash-chained audit trail."""

from __future__ import annotations

import json
import os

import click

from workers.cli.options import json_option, ts
from workers.cli.output import emit_json, table


@click.group()
def audit() -> None:
    """The append-only, hash-chained audit trail."""

def _without_migrating() -> None:
    """Reading the trail must not change the database it reads (it may be a damaged copy kept for an
    investigation, E2): not even a schema migration of an older copy."""
    from workers.errors import OpsqError
    from workers.settings import reload_settings
    from workers.store.db import current_revision, get_engine

    os.environ["OPSQ_AUTO_MIGRATE"] = "false"
    reload_settings()
    engine = get_engine()
    if current_revision(engine) is None:
        raise OpsqError(f"{engine.url.render_as_string(hide_password=True)} has no opsqueue schema (nothing "
                        "recorded yet, or the wrong OPSQ_DATABASE_URL); `opsq db upgrade` creates it")


@audit.command("list")
@click.option("--since", help="Only entries this recent: 15m, 24h, 7d.")
@click.option("--action", "action_name", help="Only this operation (submit, approve, circuit_reset, ...).")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@json_option
def audit_list(since: str | None, action_name: str | None, limit: int, as_json: bool) -> None:
    """Who did what, when, on what (oldest first). Entries not chained yet show `pending`. Writes nothing."""
    from workers.ops.reports import parse_since
    from workers.store import audit as trail

    _without_migrating()
    rows = trail.entries(since=parse_since(since) if since else None, action=action_name, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(["ID", "TIME (UTC)", "ACTOR", "OPERATION", "ON", "DETAIL"],
          [["pending" if r["pending"] else r["id"], ts(r["at"]), r["actor"], r["action"], r["target"] or "",
            json.dumps(r["detail"], sort_keys=True)[:70]] for r in rows])

@audit.command("verify")
@json_option
def audit_verify(as_json: bool) -> None:
    """Check the hash chain; names the first tampered entry. Exit 1 if tampered. Writes nothing."""
    from workers.store import audit as trail

    _without_migrating()
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
