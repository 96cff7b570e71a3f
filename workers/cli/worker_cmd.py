"""opsq worker: a thin wrapper over Celery's own worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from workers.cli.options import actor_option, read_only

if TYPE_CHECKING:
    from celery import Celery


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--queues", "-Q", help="Comma-separated queues (default: all).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), help="Worker processes (default: CPUs).")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork",
              show_default=True)
@click.option("--hostname", "-n", help="Worker node name (default: opsq@<host>).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str | None, concurrency: int | None, pool: str, hostname: str | None, loglevel: str,
           celery_args: tuple[str, ...]) -> None:
    """Start a worker. Extra arguments go to `celery worker` as they are."""
    from workers.cli.broker import ensure_broker
    from workers.queues import parse_queue_list

    names = parse_queue_list(queues)
    url, owned = ensure_broker()
    if owned:
        click.echo(f"started embedded Redis at {url} (stops with this worker)", err=True)
    from workers.celery_app import app
    from workers.store.db import get_engine

    get_engine()  # migrate (when enabled) and fail now, not on the first action
    argv = ["-Q", ",".join(names), "-l", loglevel, "-P", pool, "-n", hostname or "opsq@%h"]
    if concurrency:
        argv += ["-c", str(concurrency)]
    # Celery's exit status, passed on: a worker that stopped on an unrecoverable error exits non-zero, so a
    # supervisor (systemd's Restart=on-failure, Kubernetes) starts it again.
    code = run_celery_worker(app, [*argv, *celery_args])
    if code:
        raise SystemExit(code)


def run_celery_worker(app: Celery, argv: list[str]) -> int:
    """`celery worker` with `argv` (Celery's own options and parsing), returning the worker's exit status.

    Celery's worker command alone, not through the `celery` command (`app.start`): that one imports every
    other subcommand and the plugins installed beside it (click_repl and prompt_toolkit for `celery shell`,
    Flower with tornado and prometheus_client), about 12 MiB that the worker and every pool process forked
    from it would hold and never use (docs/PERFORMANCE.md, "Worker memory"). And `app.start` drops the exit
    status that click hands back."""
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker as celery_worker

    # What `celery` does before it runs a subcommand: the app's own worker options, the context object.
    for option in app.user_options.get("worker", ()):
        if option not in celery_worker.params:
            celery_worker.params.append(option)
    code = celery_worker.main(args=argv, prog_name="opsq worker", standalone_mode=False,
                              obj=CLIContext(app=app, no_color=None, workdir=None))
    return code if isinstance(code, int) else 0


@click.group("workers")
def workers_group() -> None:
    """The consuming workers as Redis sees them, and giving back what a dead one held."""


@workers_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@read_only
def workers_list(as_json: bool) -> None:
    """Each consuming connection: its node, alive or not (its heartbeat), how many messages it holds."""
    from workers.cli.output import emit_json, table
    from workers.ops import fleet

    found = fleet.consumers()
    if as_json:
        emit_json([c.to_dict() for c in found])
        return
    if not found:
        click.echo("no consuming worker known to Redis")
        return
    table(["node", "alive", "held", "last heartbeat", "owner"],
          [[c.node, "yes" if c.alive else click.style("NO", fg="red"), c.held,
            "-" if c.seen_s_ago is None else f"{c.seen_s_ago:.0f}s ago", c.owner] for c in found])


@workers_group.command("forget")
@click.argument("node")
@click.option("--force", is_flag=True, help="Even though it still sends heartbeats (its host is known to be gone).")
@actor_option
def workers_forget(node: str, force: bool, actor: str) -> None:
    """Give back now every message NODE held (instead of waiting for its heartbeat to run out)."""
    from workers.ops import fleet

    given = fleet.forget(node, force=force, actor=actor)
    click.echo(f"gave back {given} message(s) {node} held; beat's recover_lost looks for the rest")


def register(cli: click.Group) -> None:
    cli.add_command(worker)
    cli.add_command(workers_group)
