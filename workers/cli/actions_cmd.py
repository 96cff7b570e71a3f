"""opsq submit, opsq action status/list."""

from __future__ import annotations

import click

from workers.cli.options import actor_option, json_option, parse_params, priority_option, read_only
from workers.cli.output import emit_json, status_text, table
from workers.status import ActionStatus

# `opsq action list --status`: every action status but skipped (a workflow's step that never ran).
LIST_STATUSES = [s.value for s in ActionStatus if s is not ActionStatus.SKIPPED]


def _guarantee(platform: str, action: str) -> str | None:
    """What happens to this action when a call's answer is lost (docs/ARCHITECTURE.md, "The effect key")."""
    from executors.registry import executor_class
    from workers.settings import get_settings

    try:
        cls = executor_class(platform)
        extra = get_settings().executor_config(platform).extra
        # Notion's and Sheets' guarantees depend on their settings (the effect property, the marker column).
        return cls.guarantee(action, extra)
    except Exception:  # a platform this installation does not know (an old record): say nothing
        return None


def _show(view, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    guarantee = _guarantee(view.platform, view.action)
    if as_json:
        emit_json({**view.to_dict(), "guarantee": guarantee})
        return
    click.echo(f"action   {view.id}")
    click.echo(f"what     {view.platform}.{view.action}  (queue {view.queue}, priority {view.priority})")
    if guarantee:
        click.echo(f"if an answer is lost: {guarantee}")
    click.echo(f"status   {status_text(view.status)}  attempts {view.attempts}/{view.max_attempts}")
    if view.duration_s is not None:
        click.echo(f"took     {view.duration_s:.3f}s")
    if view.reconciled:
        click.echo("reconciled: true  (an attempt's answer was lost; its effect was found on the platform, "
                   "not made twice)")
    if view.scheduled_for and view.status == ActionStatus.SCHEDULED:
        click.echo(f"due      {view.scheduled_for.isoformat()}")
    if view.expires_at:
        click.echo(f"deadline {view.expires_at.isoformat()}")
    if view.next_attempt_at:
        click.echo(f"next try {view.next_attempt_at.isoformat()}")
    if view.error:
        click.echo(f"error    [{view.error_kind}] {view.error}")
    if view.result is not None:
        import json

        click.echo(f"result   {json.dumps(view.result, sort_keys=True)}")


@click.command()
@click.argument("platform")
@click.argument("action")
@click.option("--param", "-p", "pairs", multiple=True, metavar="K=V", help="A param (repeatable).")
@click.option("--params-json", help="All params as one JSON object.")
@priority_option
@click.option("--idempotency-key", help="Submitting the same key again returns the first action.")
@click.option("--dedupe", is_flag=True, help="Derive the idempotency key from platform, action and params.")
@click.option("--fail-fast", is_flag=True, help="Fail at once if the platform's circuit breaker is open.")
@click.option("--max-attempts", type=click.IntRange(1, 100), help="Attempts before dead-lettering.")
@click.option("--wait", is_flag=True, help="Wait for the final status and result.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds --wait waits.")
@click.option("--in", "in_", metavar="DURATION", help="Run it this much later (90s, 10m, 2h, 7d), not now.")
@click.option("--at", "at", metavar="TIME", help="Run it at this time (ISO 8601 with a zone: 2026-12-24T08:00Z).")
@click.option("--expires-in", metavar="DURATION",
              help="Its deadline: not started by then (from when it is due), it ends `expired`, uncalled.")
@json_option
def submit(platform: str, action: str, pairs: tuple[str, ...], params_json: str | None, priority: str,
           idempotency_key: str | None, dedupe: bool, fail_fast: bool, max_attempts: int | None, wait: bool,
           timeout: float, in_: str | None, at: str | None, expires_in: str | None, as_json: bool) -> None:
    """Validate and enqueue one action; prints its id. With --in or --at it is scheduled: sent when due.

    Which platforms and actions exist: `opsq actions`; an action's params (types, defaults) and a working
    example: `opsq actions PLATFORM ACTION` (`opsq actions slack send_message`)."""
    from workers.client import submit_action
    from workers.scheduling import parse_duration, parse_time

    if in_ is not None and at is not None:
        raise click.UsageError("give --in or --at, not both")
    handle = submit_action(platform, action, parse_params(pairs, params_json), priority=priority,
                           idempotency_key=idempotency_key, dedupe=dedupe, max_attempts=max_attempts,
                           fail_fast=fail_fast,
                           countdown=None if in_ is None else parse_duration(in_, "--in"),
                           eta=None if at is None else parse_time(at, "--at"),
                           expires_in=None if expires_in is None else parse_duration(expires_in, "--expires-in"))
    if handle.deduplicated:
        click.echo(f"idempotency key already used: returning the first action {handle.id}; nothing enqueued",
                   err=True)
    if not wait and not as_json and not handle.deduplicated:
        view = handle.status()
        if view.status == ActionStatus.SCHEDULED and view.scheduled_for is not None:
            click.echo(f"scheduled for {view.scheduled_for:%Y-%m-%d %H:%M:%S} UTC (opsq action list --scheduled; "
                       f"opsq action cancel {handle.id})", err=True)
    if not wait:
        if as_json:
            emit_json({"id": handle.id, "deduplicated": handle.deduplicated,
                       "status": handle.status().status})
        else:
            click.echo(handle.id)
        return
    view = handle.wait(timeout)
    _show(view, as_json)
    if view.status != ActionStatus.SUCCEEDED:
        raise SystemExit(1)

@click.group()
def action() -> None:
    """Inspect actions."""

@action.command("status")
@click.argument("action_id")
@json_option
@read_only
def action_status(action_id: str, as_json: bool) -> None:
    """One action: status, attempts, result or error."""
    from workers.client import current_status

    _show(current_status(action_id), as_json)

@action.command("cancel")
@click.argument("action_id")
@click.option("--why", help="Recorded with the cancel (the audit trail, the action's error).")
@actor_option
@json_option
def action_cancel(action_id: str, why: str | None, actor: str, as_json: bool) -> None:
    """Cancel an action not started yet (scheduled, queued, retrying): it never calls its platform."""
    from workers.client import cancel_action

    done = cancel_action(action_id, actor=actor, why=why)
    if as_json:
        emit_json(done.to_dict())
        return
    click.echo(f"{action_id}: {status_text(done.status)} ({done.note})")


@action.command("list")
@click.option("--status", type=click.Choice(LIST_STATUSES))
@click.option("--scheduled", is_flag=True, help="The scheduled actions (--status scheduled), with when each is due.")
@click.option("--platform")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@json_option
@read_only
def action_list(status: str | None, scheduled: bool, platform: str | None, limit: int, as_json: bool) -> None:
    """The newest actions."""
    from workers.client import current_status
    from workers.store import actions as store

    if scheduled:
        if status not in (None, ActionStatus.SCHEDULED):
            raise click.UsageError("--scheduled lists the scheduled actions: leave out --status")
        status = ActionStatus.SCHEDULED

    if status == ActionStatus.RUNNING:
        # Running is live state in Redis (the worker writes no running row): look at what is not final.
        candidates = [*store.list_recent(limit=limit * 5, status=ActionStatus.QUEUED, platform=platform),
                      *store.list_recent(limit=limit * 5, status=ActionStatus.RETRYING, platform=platform)]
        views = [v for v in (current_status(c.id) for c in candidates) if v.status == ActionStatus.RUNNING][:limit]
    else:
        views = store.list_recent(limit=limit, status=status, platform=platform)
    if as_json:
        emit_json([v.to_dict() for v in views])
        return
    if status == ActionStatus.SCHEDULED:
        views.sort(key=lambda v: v.scheduled_for or v.created_at)
        table(["ID", "PLATFORM", "ACTION", "PRIORITY", "DUE (UTC)", "EXPIRES (UTC)"],
              [[v.id, v.platform, v.action, v.priority, _utc(v.scheduled_for), _utc(v.expires_at)] for v in views])
        return
    table(["ID", "PLATFORM", "ACTION", "PRIORITY", "STATUS", "ATTEMPTS", "CREATED"],
          [[v.id, v.platform, v.action, v.priority, status_text(v.status), v.attempts,
            v.created_at.strftime("%Y-%m-%d %H:%M:%S")] for v in views])


def _utc(when) -> str:  # type: ignore[no-untyped-def]
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def register(cli: click.Group) -> None:
    cli.add_command(submit)
    cli.add_command(action)
