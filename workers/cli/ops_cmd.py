"""Operator commands: maintenance and beat, audit, queues, health, logs, metrics, backups, alerts."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from workers.cli.guards_cmd import actor_option
from workers.cli.main import json_option
from workers.cli.output import emit_json, status_text, table

CHECK_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


def _ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value or "-")


def _checks(checks: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([c.to_dict() for c in checks])
        return
    for c in checks:
        mark = click.style(f"{c.status.upper():<4}", fg=CHECK_COLOURS[c.status], bold=True)
        click.echo(f"{mark}  {c.name:<28} {c.detail}")


def register(cli: click.Group) -> None:
    # ---- maintenance and beat -------------------------------------------------------------------
    @cli.group()
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
    def maintenance_list(as_json: bool) -> None:
        """Each job's schedule and last run."""
        from beat import maintenance as jobs
        from beat.schedule import build
        from workers.settings import get_settings

        schedule = build(get_settings())
        last = jobs.last_runs()
        rows = []
        for name in jobs.JOBS:
            run = last.get(name, {})
            rows.append({"job": name, "every": str(schedule[name]["schedule"]), "last_started": run.get("started_at"),
                         "ok": run.get("ok"), "origin": run.get("origin"), "summary": run.get("summary")})
        if as_json:
            emit_json(rows)
            return
        table(["JOB", "SCHEDULE", "LAST RUN", "OK", "BY"],
              [[r["job"], r["every"], _ts(r["last_started"]), "-" if r["ok"] is None else ("yes" if r["ok"] else "NO"),
                r["origin"] or "-"] for r in rows])

    @cli.command()
    @click.option("--loglevel", "-l", default="INFO", show_default=True)
    def beat(loglevel: str) -> None:
        """Start Celery beat with the maintenance schedule (only one beat runs it, however many start)."""
        from workers.celery_app import app

        app.Beat(scheduler="beat.scheduler:LeaderScheduler", loglevel=loglevel).run()

    # ---- audit ----------------------------------------------------------------------------------
    @cli.group()
    def audit() -> None:
        """The append-only, hash-chained audit trail."""

    @audit.command("list")
    @click.option("--since", help="Only entries this recent: 15m, 24h, 7d.")
    @click.option("--action", "action_name", help="Only this operation (submit, approve, circuit_reset, ...).")
    @click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
    @json_option
    def audit_list(since: str | None, action_name: str | None, limit: int, as_json: bool) -> None:
        """Who did what, when, on what (oldest first)."""
        from workers.ops.reports import parse_since
        from workers.store import audit as trail

        rows = trail.entries(since=parse_since(since) if since else None, action=action_name, limit=limit)
        if as_json:
            emit_json(rows)
            return
        table(["ID", "TIME (UTC)", "ACTOR", "OPERATION", "ON", "DETAIL"],
              [[r["id"], _ts(r["at"]), r["actor"], r["action"], r["target"] or "",
                json.dumps(r["detail"], sort_keys=True)[:70]] for r in rows])

    @audit.command("verify")
    @json_option
    def audit_verify(as_json: bool) -> None:
        """Check the hash chain; names the first tampered entry. Exit 1 if tampered."""
        from workers.store import audit as trail

        verdict = trail.verify()
        if as_json:
            emit_json(verdict.to_dict())
        elif verdict.ok:
            click.echo(click.style("OK", fg="green", bold=True) + f"  {verdict.checked} entries, chain intact")
        else:
            click.echo(click.style("TAMPERED", fg="red", bold=True)
                       + f"  first bad entry: id {verdict.first_bad_id}: {verdict.reason} "
                         f"({verdict.checked} entries before it are intact)")
        if not verdict.ok:
            raise SystemExit(1)

    # ---- queues ---------------------------------------------------------------------------------
    @cli.group()
    def queue() -> None:
        """Queues: depth, stuck actions, pause, resume, clear."""

    @queue.command("status")
    @json_option
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

    # ---- health and configuration ---------------------------------------------------------------
    @cli.command()
    @click.option("--strict", is_flag=True, help="Warnings count as unhealthy too.")
    @json_option
    def health(strict: bool, as_json: bool) -> None:
        """Redis, database, workers and their queues, beat, breakers, Flower. Exit 1 when unhealthy."""
        from beat import health as beat_health
        from workers.ops.health import health as run_checks

        checks = run_checks(more=beat_health.checks)
        _checks(checks, as_json)
        bad = {"fail", "warn"} if strict else {"fail"}
        if any(c.status in bad for c in checks):
            raise SystemExit(1)

    @cli.command("validate-env")
    @json_option
    def validate_env(as_json: bool) -> None:
        """Every OPSQ_ setting (secrets masked) and what is wrong with them. Exit 1 on errors."""
        from beat.schedule import build
        from workers.ops.health import FAIL, Check
        from workers.ops.health import validate_env as run_checks
        from workers.settings import get_settings

        checks = run_checks()
        try:
            build(get_settings())
        except ValueError as exc:
            checks.append(Check("OPSQ_BEAT_INTERVALS", FAIL, str(exc)))
        _checks(checks, as_json)
        if any(c.status == "fail" for c in checks):
            raise SystemExit(1)

    @cli.command("test-auth")
    @click.argument("platform", required=False)
    @json_option
    def test_auth(platform: str | None, as_json: bool) -> None:
        """Each platform's credentials against its configured base URL. Exit 1 if any fails."""
        from workers.ops.health import test_auth as run_checks

        checks = run_checks([platform] if platform else None)  # None: every platform that needs a token
        _checks(checks, as_json)
        if any(c.status == "fail" for c in checks):
            raise SystemExit(1)

    # ---- logs, analysis, metrics ----------------------------------------------------------------
    @cli.group()
    def logs() -> None:
        """What happened, from the store."""

    @logs.command("errors")
    @click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
    @json_option
    def logs_errors(limit: int, as_json: bool) -> None:
        """The newest failures: actions and compensations."""
        from workers.ops import reports
        from workflows.reports import compensation_errors

        rows = reports.newest(limit, reports.action_errors(limit), compensation_errors(limit))
        if as_json:
            emit_json(rows)
            return
        table(["TIME (UTC)", "WHAT", "ID", "PLATFORM.ACTION", "KIND", "ERROR"],
              [[_ts(r["at"]), r["what"], r["id"], f"{r['platform']}.{r['action']}", r["kind"], (r["error"] or "")[:80]]
               for r in rows])

    @logs.command("workflow")
    @click.argument("workflow_id")
    @json_option
    def logs_workflow(workflow_id: str, as_json: bool) -> None:
        """A workflow's timeline."""
        from workflows import state

        events = state.events(workflow_id) if state.get_run_row(workflow_id) else []
        if as_json:
            emit_json(events)
            return
        for e in events:
            step = f" [{e['step_id']}]" if e["step_id"] else ""
            click.echo(f"{_ts(e['at'])}  {e['kind']}{step}  {e['detail'] or ''}")

    @logs.command("platform")
    @click.argument("platform")
    @click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
    @json_option
    def logs_platform(platform: str, limit: int, as_json: bool) -> None:
        """The newest actions on one platform."""
        from workers.guards.breaker import check_platform
        from workers.ops.reports import platform_log

        rows = platform_log(check_platform(platform), limit)
        if as_json:
            emit_json(rows)
            return
        table(["CREATED (UTC)", "ID", "ACTION", "STATUS", "ATTEMPTS", "ERROR"],
              [[_ts(r["created_at"]), r["id"], r["action"], status_text(r["status"]), r["attempts"],
                (r["error"] or "")[:70]] for r in rows])

    @cli.group()
    def analyze() -> None:
        """Analysis of what went wrong."""

    @analyze.command("failures")
    @click.option("--since", default="24h", show_default=True)
    @json_option
    def analyze_failures(since: str, as_json: bool) -> None:
        """Failures grouped by platform, action and error class, with the top messages."""
        from workers.ops.reports import failures, parse_since

        groups = failures(parse_since(since))
        if as_json:
            emit_json(groups)
            return
        if not groups:
            click.echo(f"no failures in the last {since}")
        for g in groups:
            click.echo(click.style(f"{g['count']:>5}  {g['platform']}.{g['action']}  [{g['error_kind']}]", bold=True))
            for m in g["top_messages"]:
                click.echo(f"       {m['count']:>4} x {m['message']}")

    @cli.command()
    @click.option("--since", default="1h", show_default=True)
    @json_option
    def metrics(since: str, as_json: bool) -> None:
        """Per platform: throughput, success rate, p50/p95 duration, retries, breaker state."""
        from workers.ops.reports import metrics as compute
        from workers.ops.reports import parse_since

        data = compute(parse_since(since))
        if as_json:
            emit_json(data)
            return
        print_metrics(data)

    # ---- backups and alerts ---------------------------------------------------------------------
    @cli.group()
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

    @cli.group()
    def alerts() -> None:
        """Alerts raised by evaluate_alerts and verify_audit."""

    @alerts.command("list")
    @click.option("--all", "show_all", is_flag=True, help="Cleared ones too.")
    @json_option
    def alerts_list(show_all: bool, as_json: bool) -> None:
        """Firing alerts (and cleared ones with --all)."""
        from beat.alerts import alerts as read

        rows = read(state=None if show_all else "firing")
        if as_json:
            emit_json(rows)
            return
        if not rows:
            click.echo("no firing alerts" if not show_all else "no alerts")
            return
        table(["ID", "STATE", "SEVERITY", "FIRED (UTC)", "CLEARED", "MESSAGE"],
              [[r["id"], r["state"], r["severity"], _ts(r["fired_at"]), _ts(r["cleared_at"]), r["message"]]
               for r in rows])


def print_metrics(data: dict[str, Any]) -> None:
    table(["PLATFORM", "SUBMITTED", "OK", "FAILED", "IN FLIGHT", "SUCCESS", "PER MIN", "P50", "P95", "RETRIES",
           "BREAKER"],
          [[p, m["submitted"], m["succeeded"], m["failed"], m["in_flight"],
            "-" if m["success_rate"] is None else f"{m['success_rate']:.1%}", m["throughput_per_min"],
            "-" if m["p50_s"] is None else f"{m['p50_s'] * 1000:.0f}ms",
            "-" if m["p95_s"] is None else f"{m['p95_s'] * 1000:.0f}ms", m["retries"], m["breaker"]]
           for p, m in data["platforms"].items()])
    if data["by_priority"]:
        click.echo("by priority: " + "  ".join(f"{k}={v}" for k, v in sorted(data["by_priority"].items())))
    sys.stdout.flush()
