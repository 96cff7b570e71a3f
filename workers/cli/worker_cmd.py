"""opsq worker: a thin wrapper over Celery's own worker."""

from __future__ import annotations

import click


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
    argv = ["worker", "-Q", ",".join(names), "-l", loglevel, "-P", pool, "-n", hostname or "opsq@%h"]
    if concurrency:
        argv += ["-c", str(concurrency)]
    # Celery's exit status, passed on: a worker that stopped on an unrecoverable error exits non-zero, so a
    # supervisor (systemd's Restart=on-failure, Kubernetes) starts it again.
    code = app.start(argv=[*argv, *celery_args])
    if code:
        raise SystemExit(code)


def register(cli: click.Group) -> None:
    cli.add_command(worker)
