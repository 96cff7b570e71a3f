"""opsq logs, analyze, metrics: what happened, from the store."""

from __future__ import annotations

import sys
from typing import Any

import click

from workers.cli.options import json_option, read_only, ts
from workers.cli.output import emit_json, status_text, table


@click.group()
def logs() -> None:
    """What happened, from the store."""

@logs.command("errors")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@json_option
@read_only
def logs_errors(limit: int, as_json: bool) -> None:
    """The newest failures: actions and compensations."""
    from workers.ops import reports
    from workflows.reports import compensation_errors

    rows = reports.newest(limit, reports.action_errors(limit), compensation_errors(limit))
    if as_json:
        emit_json(rows)
        return
    table(["TIME (UTC)", "WHAT", "ID", "PLATFORM.ACTION", "KIND", "ERROR"],
          [[ts(r["at"]), r["what"], r["id"], f"{r['platform']}.{r['action']}", r["kind"], (r["error"] or "")[:80]]
           for r in rows])

@logs.command("workflow")
@click.argument("workflow_id")
@json_option
@read_only
def logs_workflow(workflow_id: str, as_json: bool) -> None:
    """A workflow's timeline."""
    from workflows import state

    events = state.events(workflow_id) if state.get_run_row(workflow_id) else []
    if as_json:
        emit_json(events)
        return
    for e in events:
        step = f" [{e['step_id']}]" if e["step_id"] else ""
        click.echo(f"{ts(e['at'])}  {e['kind']}{step}  {e['detail'] or ''}")

@logs.command("platform")
@click.argument("platform")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@json_option
@read_only
def logs_platform(platform: str, limit: int, as_json: bool) -> None:
    """The newest actions on one platform."""
    from workers.guards.breaker import check_platform
    from workers.ops.reports import platform_log

    rows = platform_log(check_platform(platform), limit)
    if as_json:
        emit_json(rows)
        return
    table(["CREATED (UTC)", "ID", "ACTION", "STATUS", "ATTEMPTS", "ERROR"],
          [[ts(r["created_at"]), r["id"], r["action"], status_text(r["status"]), r["attempts"],
            (r["error"] or "")[:70]] for r in rows])

@click.group()
def analyze() -> None:
    """Analysis of what went wrong."""

@analyze.command("failures")
@click.option("--since", default="24h", show_default=True)
@json_option
@read_only
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

@click.command()
@click.option("--since", default="1h", show_default=True)
@json_option
@read_only
def metrics(since: str, as_json: bool) -> None:
    """Per platform: throughput, success rate, p50/p95 duration, retries, breaker state."""
    from workers.ops.reports import metrics as compute
    from workers.ops.reports import parse_since

    data = compute(parse_since(since))
    if as_json:
        emit_json(data)
        return
    print_metrics(data)

def per_minute(rate: float) -> str:
    """A rate as people read it: three significant figures below 100 (75.2, 0.417), whole above (1250)."""
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"


def print_metrics(data: dict[str, Any]) -> None:
    table(["PLATFORM", "SUBMITTED", "OK", "FAILED", "IN FLIGHT", "SUCCESS", "PER MIN", "P50", "P95", "RETRIES",
           "BREAKER"],
          [[p, m["submitted"], m["succeeded"], m["failed"], m["in_flight"],
            "-" if m["success_rate"] is None else f"{m['success_rate']:.1%}", per_minute(m["throughput_per_min"]),
            "-" if m["p50_s"] is None else f"{m['p50_s'] * 1000:.0f}ms",
            "-" if m["p95_s"] is None else f"{m['p95_s'] * 1000:.0f}ms", m["retries"], m["breaker"]]
           for p, m in data["platforms"].items()])
    if data["by_priority"]:
        click.echo("by priority: " + "  ".join(f"{k}={v}" for k, v in sorted(data["by_priority"].items())))
    sys.stdout.flush()


def register(cli: click.Group) -> None:
    cli.add_command(logs)
    cli.add_command(analyze)
    cli.add_command(metrics)
