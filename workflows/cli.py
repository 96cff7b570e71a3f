"""opsq workflow ... and opsq approvals ..."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from workers.cli.options import actor_option, json_option, parse_params, read_only
from workers.cli.output import emit_json, status_text, table
from workflows.status import ApprovalStatus, CompensationStatus, StepStatus, WorkflowStatus

# Workflows', steps' and compensations' statuses (the members of the three enums compare and hash as their text).
WF_COLOURS: dict[str, str] = {
    WorkflowStatus.SUCCEEDED: "green", WorkflowStatus.RUNNING: "blue", WorkflowStatus.AWAITING_APPROVAL: "yellow",
    WorkflowStatus.ROLLING_BACK: "yellow", WorkflowStatus.ROLLED_BACK: "magenta", WorkflowStatus.ROLLBACK_FAILED: "red",
    WorkflowStatus.FAILED: "red", WorkflowStatus.RESOLVED: "cyan", WorkflowStatus.PENDING: "white",
    WorkflowStatus.CANCELLING: "yellow", WorkflowStatus.CANCELLED: "magenta",
    StepStatus.SKIPPED: "white", CompensationStatus.DONE: "green", StepStatus.QUEUED: "cyan"}
WF_STATUSES = [s.value for s in WorkflowStatus]


def wf_status(status: str) -> str:
    return click.style(status, fg=WF_COLOURS.get(status, "white"),
                       bold=status in (WorkflowStatus.ROLLBACK_FAILED, WorkflowStatus.FAILED))


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(step: dict[str, Any]) -> str:
    if step.get("started_at") and step.get("finished_at"):
        return f"{(step['finished_at'] - step['started_at']).total_seconds():.2f}s"
    return "-"


def parse_inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    return parse_params(pairs, None, hint="--input")


def print_status(wid: str) -> None:
    from workflows import state

    run = state.get_run_row(wid)
    click.echo(f"workflow {wid}  {run['name']}  {wf_status(run['status'])}  priority {run['priority']}")
    if run["error"]:
        click.echo(f"reason   {run['error']}")
    table(["STEP", "STATUS", "PLATFORM", "ACTION", "ATTEMPTS", "DURATION", "ERROR"],
          [[s["step_id"], wf_status(s["status"]), s["platform"], s["action"], s["attempts"], _duration(s),
            (s["error"] or "")[:80]] for s in state.steps(wid)])
    if run["status"] == WorkflowStatus.AWAITING_APPROVAL:
        print_pending_approvals(wid)
    comps = state.compensations(wid)
    if comps:
        click.echo("rollback (in order):")
        table(["#", "STEP", "UNDO", "STATUS", "ERROR"],
              [[c["position"], c["step_id"], f"{c['platform']}.{c['action']}", wf_status(c["status"]),
                (c["error"] or "")[:80]] for c in comps])


@contextmanager
def _problems_listed() -> Iterator[None]:
    """A spec's problems (workflows.spec.check) one a line on stderr, `invalid: line 7: step deploy: ...`, and
    exit 1: the same list for `workflow validate` and `workflow run` (and the HTTP API's 422)."""
    from workflows.spec import WorkflowInvalid

    try:
        yield
    except WorkflowInvalid as exc:
        for err in exc.errors:
            click.echo(click.style("invalid: ", fg="red", bold=True) + err, err=True)
        raise SystemExit(1) from None


def print_pending_approvals(wid: str) -> None:
    """Each gate the workflow waits at, and the command that opens it. The approver is another person than
    the one who submitted it (a gate's default: allow_self_approval is false), hence `--actor`."""
    from workflows import state

    for a in state.approvals(workflow_id=wid):
        by = f" (not {a['requested_by']}, who submitted it)" if a["requested_by"] else ""
        click.echo(f"approval {a['id']} waits for step(s) {', '.join(a['step_ids'])}; the approver{by} runs:")
        click.echo(f"    opsq approvals approve {a['id']} --actor NAME")
        click.echo(f"    (or: opsq approvals deny {a['id']} --reason TEXT --actor NAME)")


@click.group()
def workflow() -> None:
    """Multi-step workflows: run, inspect, roll back, resolve."""

@workflow.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "inputs", multiple=True, metavar="K=V", help="Override an input (repeatable).")
@click.option("--priority", type=click.Choice(["critical", "high", "normal", "low"]))
@click.option("--idempotency-key", help="Submitting the same key again returns the first workflow.")
@click.option("--wait", is_flag=True, help="Wait until it finishes or waits for an approval.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.option("--expires-in", metavar="DURATION",
              help="Its deadline (90s, 10m, 2h): unfinished then, it is cancelled and rolled back.")
@click.option("--in", "in_", metavar="DURATION", help="Start it this much later (90s, 10m, 2h), not now.")
@click.option("--at", "at", metavar="TIME", help="Start it at this time (ISO 8601 with a zone: 2026-12-24T08:00Z).")
@json_option
def workflow_run(file: str, inputs: tuple[str, ...], priority: str | None, idempotency_key: str | None,
                 wait: bool, timeout: float, expires_in: str | None, in_: str | None, at: str | None,
                 as_json: bool) -> None:
    """Validate and start a workflow from a YAML file; prints its id. With --in or --at it is `pending` until
    then (started by the beat leader)."""
    from workers.scheduling import parse_duration, parse_time
    from workflows.client import submit_workflow

    if in_ is not None and at is not None:
        raise click.UsageError("give --in or --at, not both")
    with _problems_listed():
        handle = submit_workflow(file, parse_inputs(inputs), priority=priority, idempotency_key=idempotency_key,
                                 expires_in=None if expires_in is None else parse_duration(expires_in, "--expires-in"),
                                 countdown=None if in_ is None else parse_duration(in_, "--in"),
                                 eta=None if at is None else parse_time(at, "--at"))
    status = handle.wait(timeout).status if wait else handle.status()
    if as_json:
        out: dict[str, Any] = {"id": handle.id, "status": status, "deduplicated": handle.deduplicated}
        if status == WorkflowStatus.AWAITING_APPROVAL:
            from workflows import state

            out["approvals"] = [{"id": a["id"], "step_ids": a["step_ids"]}
                                for a in state.approvals(workflow_id=handle.id)]
        emit_json(out)
    elif wait:
        print_status(handle.id)
    else:
        click.echo(handle.id)
    if wait and status not in (WorkflowStatus.SUCCEEDED, WorkflowStatus.AWAITING_APPROVAL):
        raise SystemExit(1)

@workflow.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "inputs", multiple=True, metavar="K=V")
@read_only
def workflow_validate(file: str, inputs: tuple[str, ...]) -> None:
    """Check a workflow file: every problem is listed, each once with its line, nothing runs."""
    from workflows.spec import check, levels

    with _problems_listed():
        spec = check(file, parse_inputs(inputs))
    shape = " -> ".join("(" + ", ".join(lv) + ")" if len(lv) > 1 else lv[0] for lv in levels(spec))
    click.echo(f"{spec.name}: valid, {len(spec.steps)} steps: {shape}")

@workflow.command("list")
@click.option("--status", type=click.Choice(WF_STATUSES))
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@json_option
@read_only
def workflow_list(status: str | None, limit: int, as_json: bool) -> None:
    """The newest workflows."""
    from workflows import state

    runs = state.list_runs(status=status, limit=limit)
    if as_json:
        emit_json([{k: v for k, v in r.items() if k != "spec"} for r in runs])
        return
    table(["ID", "NAME", "STATUS", "PRIORITY", "CREATED", "FAILED STEP"],
          [[r["id"], r["name"], wf_status(r["status"]), r["priority"], _ts(r["created_at"]),
            r["failed_step"] or ""] for r in runs])

@workflow.command("status")
@click.argument("workflow_id")
@json_option
@read_only
def workflow_status(workflow_id: str, as_json: bool) -> None:
    """One line a step: status, platform, duration, error."""
    from workflows import state

    if as_json:
        run = state.get_run_row(workflow_id)
        emit_json({"id": workflow_id, "status": run["status"], "error": run["error"],
                   "steps": [{k: s[k] for k in ("step_id", "status", "platform", "action", "attempts",
                                                 "error")} | {"duration": _duration(s)}
                             for s in state.steps(workflow_id)],
                   "compensations": state.compensations(workflow_id)})
        return
    print_status(workflow_id)

@workflow.command("state")
@click.argument("workflow_id")
@json_option
@read_only
def workflow_state(workflow_id: str, as_json: bool) -> None:
    """The whole record: spec, input, step outputs, compensations, approvals, timeline."""
    from workflows import state

    whole = state.whole(workflow_id)
    if as_json:
        emit_json(whole)
        return
    print_status(workflow_id)
    click.echo("input:   " + json.dumps(whole["input"], sort_keys=True))
    for s in whole["steps"]:
        if s["output"] is not None:
            click.echo(f"output  {s['step_id']}: {json.dumps(s['output'], sort_keys=True)}")
    for a in whole["approvals"]:
        click.echo(f"approval {a['id']}: {a['status']} (steps {', '.join(a['step_ids'])}, expires "
                   f"{_ts(a['expires_at'])}, decided by {a['decided_by'] or '-'})")
    click.echo("timeline:")
    for e in whole["timeline"]:
        step = f" [{e['step_id']}]" if e["step_id"] else ""
        click.echo(f"  {_ts(e['at'])}  {e['kind']}{step}  {e['detail'] or ''}")

@workflow.command("rollback")
@click.argument("workflow_id")
@actor_option
def workflow_rollback(workflow_id: str, actor: str) -> None:
    """Roll back now, or retry a failed rollback."""
    from workflows.client import rollback

    click.echo(f"workflow {workflow_id}: {rollback(workflow_id, actor)}")

@workflow.command("cancel")
@click.argument("workflow_id")
@click.option("--no-rollback", is_flag=True, help="Leave the steps that completed as they are (no compensation).")
@click.option("--why", help="Recorded with the cancel.")
@actor_option
def workflow_cancel(workflow_id: str, no_rollback: bool, why: str | None, actor: str) -> None:
    """Cancel a workflow: no further step starts; the completed ones are compensated, newest first."""
    from workflows.client import cancel_workflow

    note = cancel_workflow(workflow_id, actor=actor, rollback=not no_rollback, why=why)
    click.echo(f"workflow {workflow_id}: {note}")

@workflow.command("resume")
@click.argument("workflow_id")
@actor_option
def workflow_resume(workflow_id: str, actor: str) -> None:
    """Send the rest of a running workflow again (its messages were lost); done steps are not redone."""
    from workflows.client import resume

    click.echo(f"workflow {workflow_id}: {resume(workflow_id, actor)}")

@workflow.command("retry")
@click.argument("workflow_id")
@click.option("--from-failed-step", "from_failed_step", is_flag=True,
              help="Run the failed step and every step after it again; completed steps are kept, not run again.")
@click.option("--dry-run", is_flag=True, help="Show what would run again and what is kept; change nothing.")
@actor_option
def workflow_retry(workflow_id: str, from_failed_step: bool, dry_run: bool, actor: str) -> None:
    """Run a failed workflow (a spec with `on_failure: stop`) again from its failed step.

    The steps that succeeded keep their outputs (the steps after them read those); every other step runs
    again, each as a new action. A workflow that rolled back has nothing to continue: run it again."""
    from workflows.client import plan_retry, retry

    if not from_failed_step:
        # The only retry there is; the flag says so on the command line, where a later --from-start would differ.
        raise click.UsageError("say where to retry from: --from-failed-step")
    if dry_run:
        plan = plan_retry(workflow_id)
        click.echo(f"workflow {workflow_id}: failed at step {plan.failed_step or '?'}; a retry runs again from "
                   f"level {plan.from_level}: {', '.join(plan.rerun)}")
        click.echo(f"kept (not run again; their outputs are reused): {', '.join(plan.kept) or 'none'}")
        click.echo("nothing was changed (dry run)")
        return
    click.echo(f"workflow {workflow_id}: {retry(workflow_id, actor)}")

@workflow.command("mark-resolved")
@click.argument("workflow_id")
@click.option("--note", required=True, help="What was done by hand.")
@actor_option
def workflow_mark_resolved(workflow_id: str, note: str, actor: str) -> None:
    """Record that a person fixed the workflow by hand."""
    from workflows.client import mark_resolved

    mark_resolved(workflow_id, note, actor)
    click.echo(f"workflow {workflow_id} marked resolved by {actor}")

@click.group()
def approvals() -> None:
    """Approval gates of workflows."""

@approvals.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also decided and expired ones.")
@json_option
@read_only
def approvals_list(show_all: bool, as_json: bool) -> None:
    """Pending approvals (oldest first)."""
    from workflows import state

    items = state.approvals(status=None if show_all else ApprovalStatus.PENDING)
    if as_json:
        emit_json(items)
        return
    if not items:
        click.echo("no pending approvals" if not show_all else "no approvals")
        return
    table(["ID", "WORKFLOW", "STEPS", "STATUS", "EXPIRES (UTC)", "REQUESTED BY"],
          [[a["id"], a["workflow_id"], ", ".join(a["step_ids"]), status_text(a["status"]), _ts(a["expires_at"]),
            a["requested_by"] or "-"] for a in items])

@approvals.command("approve")
@click.argument("approval_id")
@click.option("--comment")
@click.option("--wait", is_flag=True, help="Then wait until the workflow finishes or waits at its next gate.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
@actor_option
def approvals_approve(approval_id: str, comment: str | None, wait: bool, timeout: float, actor: str) -> None:
    """Approve: the workflow resumes from the gated steps."""
    from workflows.client import approval_progress, approve

    handle = approve(approval_id, actor, comment)
    status, count, required = approval_progress(approval_id)
    if status == ApprovalStatus.PENDING:
        click.echo(f"recorded {actor}'s approval of {approval_id} ({count} of {required} distinct approvers): "
                   f"workflow {handle.id} still waits")
        return
    click.echo(f"approved {approval_id}: workflow {handle.id} resumes")
    if wait:
        final = handle.wait(timeout).status
        print_status(handle.id)
        if final not in (WorkflowStatus.SUCCEEDED, WorkflowStatus.AWAITING_APPROVAL):
            raise SystemExit(1)

@approvals.command("deny")
@click.argument("approval_id")
@click.option("--reason", required=True)
@actor_option
def approvals_deny(approval_id: str, reason: str, actor: str) -> None:
    """Deny: what the workflow completed is rolled back."""
    from workflows.client import deny

    handle = deny(approval_id, reason, actor)
    click.echo(f"denied {approval_id}: workflow {handle.id} rolls back")

@approvals.command("expire")
def approvals_expire() -> None:
    """Expire the approvals past their deadline now (beat does this every minute)."""
    from workflows.client import expire_due

    expired = expire_due()
    click.echo(f"expired {len(expired)} approval(s)" + (f": {', '.join(expired)}" if expired else ""))


def register(cli: click.Group) -> None:
    cli.add_command(workflow)
    cli.add_command(approvals)
