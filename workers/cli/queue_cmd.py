"""opsq queue: depth, stuck actions, pause, resume, clear."""

from __future__ import annotations

import click

from workers.cli.options import actor_option, json_option, read_only
from workers.cli.output import emit_json, table


@click.group()
def queue() -> None:
    """Queues: depth, stuck actions, pause, resume, clear."""

@queue.command("status")
@json_option
@read_only
def queue_status(as_json: bool) -> None:
    """Depth per queue and priority, oldest message, consumers, paused."""
    from workers.celery_app import app
    from workers.ops import queue_ops

    rows = queue_ops.status(app)
    if as_json:
        emit_json(rows)
        return
    table(["QUEUE", "DEPTH", "CRITICAL", "HIGH", "NORMAL", "LOW", "OLDEST (UTC)", "CONSUMERS", "PAUSED"],
          [[r["queue"], r["depth"], *r["by_priority"].values(), (r["oldest_enqueued_at"] or "-")[:19],
            ", ".join(r["consumers"]) or click.style("none", fg="yellow"),
            click.style("PAUSED", fg="yellow", bold=True) if r["paused"] else ""] for r in rows])

@queue.command("stuck")
@json_option
@read_only
def queue_stuck(as_json: bool) -> None:
    """What detect_stuck would act on (changes nothing)."""
    from workers.ops.stuck import detect

    report = detect(act=False)
    if as_json:
        emit_json(report.to_dict())
        return
    for label, ids in (("would requeue", report.requeued), ("would reconcile", report.reconciled),
                       ("would fail", report.failed), ("old but queued", report.waiting),
                       ("old but running", report.running)):
        for action_id in ids:
            click.echo(f"{label:<16} {action_id}  {report.details.get(action_id, '')}")
    for wid in report.workflows:
        click.echo(f"{'workflow':<16} {wid}  an old step has no message of its own (normal while an earlier "
                   f"step runs); detect_stuck resumes it only if nothing of it is in flight")
    if not any((report.requeued, report.reconciled, report.failed, report.waiting, report.running,
                report.workflows)):
        click.echo("nothing stuck")

@queue.command("pause")
@click.argument("name")
@actor_option
def queue_pause(name: str, actor: str) -> None:
    """Workers stop consuming QUEUE (remembered for workers started later)."""
    from workers.celery_app import app
    from workers.ops import queue_ops

    stopped = queue_ops.pause(app, name, actor)
    click.echo(f"paused {name}" + (f": {', '.join(stopped)} stopped consuming it" if stopped
                                   else " (no worker was consuming it)"))

@queue.command("resume")
@click.argument("name")
@actor_option
def queue_resume(name: str, actor: str) -> None:
    """Workers consume QUEUE again."""
    from workers.celery_app import app
    from workers.ops import queue_ops

    started = queue_ops.resume(app, name, actor)
    click.echo(f"resumed {name}" + (f": {', '.join(started)} consume it again" if started
                                    else " (no worker to restart; new workers will consume it)"))

@queue.command("clear")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Really drop every message in it.")
@actor_option
def queue_clear(name: str, yes: bool, actor: str) -> None:
    """Drop every message waiting in QUEUE (recorded in the audit trail)."""
    from workers.ops import queue_ops

    if not yes:
        raise click.UsageError(f"this drops every message in {name}; add --yes to do it")
    result = queue_ops.clear(name, actor)
    click.echo(f"cleared {name}: dropped {result['dropped']} message(s); the list is in `opsq audit list "
               "--action queue_clear`")



@queue.group("quarantine")
def quarantine() -> None:
    """Queue items a worker could not deliver (not a message) or run (unknown task, broken arguments...)."""


@quarantine.command("list")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@json_option
@read_only
def quarantine_list(limit: int, as_json: bool) -> None:
    """The newest quarantined items: when, from which queue, why, how big."""
    import time

    from workers.ops import quarantine as q

    rows = q.entries(limit)
    if as_json:
        emit_json({"counts": q.counts(), "entries": rows})
        return
    n = q.counts()
    click.echo(f"{n['kept']} kept ({n['total']} quarantined in all)")
    table(["#", "TIME (UTC)", "QUEUE", "BYTES", "TASK", "REQUEUE", "REASON"],
          [[i, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"])), r["queue"], r["bytes"], r.get("task") or "-",
            "yes" if q.why_not_requeueable(r) is None else "no", r["reason"]] for i, r in enumerate(rows)])


@quarantine.command("drop")
@click.option("--yes", is_flag=True, help="Really drop every quarantined item.")
@actor_option
def quarantine_drop(yes: bool, actor: str) -> None:
    """Empty the quarantine (recorded in the audit trail)."""
    from workers.ops import quarantine as q

    if not yes:
        raise click.UsageError("this drops every quarantined item; add --yes to do it")
    click.echo(f"dropped {q.drop(actor)} quarantined item(s)")


@quarantine.command("requeue")
@click.argument("index", type=click.IntRange(0), required=False)
@click.option("--all", "every", is_flag=True, help="Every quarantined message that can be requeued.")
@click.option("--yes", is_flag=True, help="Really put them back on their queues.")
@actor_option
def quarantine_requeue(index: int | None, every: bool, yes: bool, actor: str) -> None:
    """Put quarantined messages back on their queues, once a worker can run them (recorded in the audit trail).

    INDEX is the item's number in `opsq queue quarantine list` (the newest is 0; numbers move as new items
    arrive). Only whole task messages can go back; items that are not messages stay where they are."""
    from workers.ops import quarantine as q

    if index is not None and every:
        raise click.UsageError("give INDEX or --all, not both")
    if not yes:
        raise click.UsageError("this puts quarantined messages back on their queues; add --yes to do it")
    result = q.requeue(index, every=every, actor=actor)
    for m in result.requeued:
        click.echo(f"requeued #{m['index']} onto {m['queue']} (task {m['task']}, id {m['id']})")
    click.echo(f"requeued {len(result.requeued)} quarantined message(s)"
               + (f"; {len(result.refused)} left: they cannot be requeued" if result.refused else ""))
    for i, why in result.refused:
        click.echo(f"  #{i}: {why}")


def register(cli: click.Group) -> None:
    cli.add_command(queue)
