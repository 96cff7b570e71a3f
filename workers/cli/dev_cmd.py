"""opsq dev: the sandbox, a worker and beat in one foreground command, for trying opsqueue on one machine."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import click

from workers.dev import stack

#: The worker's node name (Celery fills in the host); the pid keeps two `opsq dev` on one Redis apart.
DEV_WORKER = "dev-{pid}@%h"


@click.command()
@click.option("--port", type=click.IntRange(0, 65535),
              help=f"The sandbox's port [default: {stack.SANDBOX_PORT}, or a free one when that is taken].")
@click.option("--concurrency", "-c", type=click.IntRange(1, 32), default=2, show_default=True,
              help="The worker's processes.")
def dev(port: int | None, concurrency: int) -> None:
    """Run the sandbox, a worker (every queue) and beat until Ctrl-C, and print the settings a second
    shell needs. Uses OPSQ_REDIS_URL and OPSQ_DATABASE_URL when set, else the embedded Redis and SQLite."""
    code = run_dev(port, concurrency)
    if code:
        raise SystemExit(code)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # one way out for Ctrl-C and `kill`: the finally below stops every child


def shell_lines(settings: dict[str, str]) -> list[str]:
    """What a second shell pastes: the venv's activate line (when this runs in one), then the exports.
    A URL holding a password is not printed: that shell takes it from where this one did."""
    lines = []
    if sys.prefix != sys.base_prefix:
        lines.append(f". {Path(sys.prefix) / 'bin' / 'activate'}")
    for name, value in settings.items():
        if urlsplit(value).password:
            lines.append(f"# {name}: as set in this shell (it holds a password, not printed)")
        else:
            lines.extend(stack.export_lines({name: value}))
    return lines


def run_dev(port: int | None, concurrency: int) -> int:
    from workers.cli.broker import ensure_broker
    from workers.queues import CONTROL_QUEUE, PLATFORM_QUEUES
    from workers.settings import reload_settings
    from workers.store.db import get_engine

    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    server, note = stack.bind_sandbox(port=stack.SANDBOX_PORT if port is None else port, fallback=port is None)
    redis_server = worker = beat = None
    try:
        server.start()
        exported = stack.point_at_sandbox(server.url)
        redis_url, redis_server = ensure_broker()
        settings = reload_settings()
        database_url = settings.resolved_database_url
        os.environ["OPSQ_DATABASE_URL"] = database_url  # the children and the second shell: one store
        get_engine()  # creates or migrates the store now, once, before the worker and beat open it
        logs = settings.home / "dev"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        name = DEV_WORKER.format(pid=os.getpid())
        worker = stack.start_worker(name, (*PLATFORM_QUEUES, CONTROL_QUEUE), concurrency, logs / "worker.log", env)
        beat = stack.start_beat(logs / "beat.log", env)
        stack.wait_ready(worker, logs / "worker.log", "the worker")

        if note:
            click.echo(click.style("note: ", fg="yellow", bold=True) + note)
        click.echo(click.style("opsq dev", bold=True) + f": sandbox {server.url}, "
                   f"worker {name.replace('%h', socket.gethostname())} "
                   f"({concurrency} processes, every queue), beat")
        click.echo(f"  broker {'embedded Redis ' if redis_server else ''}{_shown(redis_url)}, "
                   f"store {_shown(database_url)}")
        click.echo(f"  logs   {logs / 'worker.log'}, {logs / 'beat.log'}")
        click.echo("In a second shell, paste:")
        click.echo()
        for line in shell_lines({"OPSQ_REDIS_URL": redis_url, "OPSQ_DATABASE_URL": database_url, **exported}):
            click.echo(f"    {line}")
        click.echo()
        click.echo("Ctrl-C stops the sandbox, the worker and beat.", nl=True)
        sys.stdout.flush()
        while True:
            for what, process in (("the worker", worker), ("beat", beat)):
                if process.poll() is not None:
                    click.echo(f"error: {what} exited with status {process.returncode}; its log: "
                               f"{logs / ('worker.log' if process is worker else 'beat.log')}", err=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("stopping the worker, beat and the sandbox...")
        return 0
    finally:
        stack.stop_process(worker)
        stack.stop_process(beat)
        server.stop()
        if redis_server:
            redis_server.stop()
        signal.signal(signal.SIGTERM, previous)
        click.echo("opsq dev stopped")


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":**@") if parts.password else url


def register(cli: click.Group) -> None:
    cli.add_command(dev)
