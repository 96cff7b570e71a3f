"""`opsq`: every command the runbook names. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import SQLAlchemyError

from workers.errors import ConfigError, NotFound, OpsqError


class OpsqGroup(click.Group):
    """Turns every expected failure into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except NotFound as exc:
            _die(str(exc), code=3)
        except (OpsqError, ValueError) as exc:
            _die(str(exc))
        except (redis.RedisError, KombuOperationalError) as exc:
            from workers.client import redis_cause  # only on this path: it loads the client API

            # The real cause (out of memory, credentials refused, connection refused), not "is it up?".
            _die(redis_cause(exc))
        except TimeoutError as exc:
            _die(f"timed out: {exc} (it goes on in the background; follow it with `opsq action status` or "
                 "`opsq workflow status`)", code=4)
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (`| head`): nothing left to say
            sys.exit(0)
        except SQLAlchemyError as exc:
            _die(f"database error: {str(getattr(exc, 'orig', exc)).splitlines()[0]}")
        except Exception as exc:
            if os.environ.get("OPSQ_DEBUG"):
                raise
            _die(f"unexpected {type(exc).__name__}: {exc} (set OPSQ_DEBUG=1 for the traceback)")


def _die(message: str, code: int = 1) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(code)


@click.group(cls=OpsqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="opsqueue")
def cli() -> None:
    """opsqueue: reliable actions on Slack, Notion, Trello, Google Drive/Sheets and webhooks."""




def register() -> None:
    """Each layer's commands, assembled here (the way `celery` adds its subcommands): the runtime's, the
    workflows' (workflows.cli) and beat's (beat.cli). Each module's `register(cli)` adds its commands."""
    from beat import cli as beat_cli
    from workers.cli import (
        actions_cmd,
        api_cmd,
        audit_cmd,
        catalog_cmd,
        db_cmd,
        demo_cmd,
        dev_cmd,
        dlq_cmd,
        exporter_cmd,
        flower_cmd,
        guards_cmd,
        health_cmd,
        queue_cmd,
        reports_cmd,
        sandbox_cmd,
        worker_cmd,
    )
    from workflows import cli as workflows_cli

    if cli.commands:
        return
    for module in (actions_cmd, db_cmd, demo_cmd, dev_cmd, dlq_cmd, guards_cmd, sandbox_cmd, worker_cmd, workflows_cli,
                   audit_cmd, queue_cmd, health_cmd, reports_cmd, beat_cli, flower_cmd, exporter_cmd,
                   api_cmd, catalog_cmd):
        module.register(cli)


def main() -> None:
    # A submit's first span sets tracing up (OPSQ_TRACING); its spans are exported before the process ends.
    from workers.observability import tracing

    register()
    try:
        cli(prog_name="opsq")
    except ConfigError as exc:  # pragma: no cover - raised outside invoke only in odd set-ups
        _die(str(exc))
    finally:
        _close_result_subscriptions()
        tracing.flush()  # the command's spans, before the process ends


def _close_result_subscriptions() -> None:
    """Sending a group makes Celery subscribe to its results in Redis; left to interpreter shutdown,
    the unsubscribe fails noisily ("Exception ignored in AsyncResult.__del__"). The CLI follows work in
    the store, never through Celery results, so close them while the interpreter is whole."""
    module = sys.modules.get("workers.celery_app")
    if module is None or not module.app.configured:  # never used: nothing subscribed (and no broker to ask)
        return
    consumer = getattr(module.app.backend, "result_consumer", None)
    if consumer is not None:
        # Redis gone at exit: nothing to unsubscribe from, and the command has said what it had to (Celery's
        # "Retry limit exceeded ... result store backend" and its traceback named neither Redis nor the URL).
        with contextlib.suppress(Exception):
            consumer.stop()
        getattr(consumer, "subscribed_to", set()).clear()


if __name__ == "__main__":
    main()
