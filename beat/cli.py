"""Beat's commands: opsq maintenance, beat, backup, alerts (registered by workers.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from workers.cli.options import actor_option, json_option, read_only, ts
from workers.cli.output import emit_json, table


@click.group()
def maintenance() -> None:
    """The scheduled maintenance jobs (beat runs them; you can too)."""

@maintenance.command("run")
@click.argument("name")
@click.option("--enqueue", is_flag=True, help="Send it to the maintenance queue instead of running it here.")
def maintenance_run(name: str, enqueue: bool) -> None:
    """Run a job now: detect_stuck, expire_approvals, evaluate_alerts, cleanup, backup_state, verify_audit."""
    from beat import maintenance as jobs

    if name not in jobs.JOBS:
        raise ValueError(f"unknown maintenance job {name!r} (known: {', '.join(jobs.JOBS)})")
    if enqueue:
        from beat.tasks import maintenance_run as task
        from workers.queues import MAINTENANCE_QUEUE

        result = task.apply_async(args=[name], queue=MAINTENANCE_QUEUE, routing_key=MAINTENANCE_QUEUE)
        click.echo(f"sent {name} to the maintenance queue as task {result.id}")
        return
    summary = jobs.run(name)
    click.echo(f"{name}: " + json.dumps(summary, sort_keys=True, default=str))

@maintenance.command("list")
@json_option
@read_only
def maintenance_list(as_json: bool) -> None:
    """Each job's schedule and last run."""
    from beat import maintenance as jobs
    from beat.schedule import build, describe
    from workers.settings import get_settings

    schedule = build(get_settings())
    last = jobs.last_runs()
    rows = []
    for name in jobs.JOBS:
        run = last.get(name, {})
        # recover_lost has no schedule: it is started when a loss is reported (beat.scheduler).
        every = describe(schedule[name]["schedule"]) if name in schedule else "on a reported loss"
        rows.append({"job": name, "every": every, "last_started": run.get("started_at"),
                     "ok": run.get("ok"), "origin": run.get("origin"), "summary": run.get("summary")})
    if as_json:
        emit_json(rows)
        return
    table(["JOB", "SCHEDULE", "LAST RUN", "OK", "BY"],
          [[r["job"], r["every"], ts(r["last_started"]), "-" if r["ok"] is None else ("yes" if r["ok"] else "NO"),
            r["origin"] or "-"] for r in rows])

@click.command()
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Start Celery beat with the maintenance schedule (only one beat runs it, however many start)."""
    from beat.scheduler import LeaderScheduler
    from workers.celery_app import app

    app.Beat(scheduler=LeaderScheduler, loglevel=loglevel).run()


@click.group()
def backup() -> None:
    """Backups of the state store (beat makes one daily)."""

@backup.command("create")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path))
def backup_create(directory: Path | None) -> None:
    """Write a backup now."""
    from beat import backup as backups

    path = backups.create(directory)
    click.echo(f"backup written: {path}")

@backup.command("list")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path))
@json_option
@read_only
def backup_list(directory: Path | None, as_json: bool) -> None:
    """The backups kept (OPSQ_BACKUP_DIR)."""
    from beat import backup as backups

    items = backups.list_backups(directory)
    if as_json:
        emit_json(items)
        return
    table(["FILE", "BYTES", "CREATED (UTC)"], [[i["path"], i["bytes"], i["created_at"][:19]] for i in items])

@backup.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already has data.")
@click.option("--yes", is_flag=True, help="Confirm.")
@actor_option
def backup_restore(file: Path, force: bool, yes: bool, actor: str) -> None:
    """Restore the state store from FILE (into an empty database unless --force)."""
    from beat import backup as backups

    if not yes:
        raise click.UsageError("restoring replaces the state store's contents; add --yes to do it")
    counts = backups.restore(file, force=force, actor=actor)
    click.echo(f"restored {sum(counts.values())} rows from {file}: "
               + ", ".join(f"{t}={n}" for t, n in counts.items() if n))

@click.group()
def alerts() -> None:
    """Alerts raised by evaluate_alerts and verify_audit."""

@alerts.command("list")
@click.option("--all", "show_all", is_flag=True, help="Cleared ones too.")
@json_option
@read_only
def alerts_list(show_all: bool, as_json: bool) -> None:
    """Firing alerts (and cleared ones with --all)."""
    from beat.alerts import alerts as read
    from beat.models import AlertState

    rows = read(state=None if show_all else AlertState.FIRING)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no firing alerts" if not show_all else "no alerts")
        return
    table(["ID", "STATE", "SEVERITY", "FIRED (UTC)", "CLEARED", "MESSAGE"],
          [[r["id"], r["state"], r["severity"], ts(r["fired_at"]), ts(r["cleared_at"]), r["message"]]
           for r in rows])


def register(cli: click.Group) -> None:
    cli.add_command(maintenance)
    cli.add_command(beat)
    cli.add_command(backup)
    cli.add_command(alerts)
