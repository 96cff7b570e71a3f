"""`opsq`: every command the runbook names. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import SQLAlchemyError

from workers.errors import ConfigError, NotFound, OpsqError
from workers.queues import PRIORITY_NAMES


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
        except (redis.ConnectionError, KombuOperationalError) as exc:
            _die(f"cannot reach Redis ({exc}); check OPSQ_REDIS_URL and that the server is up")
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


def parse_params(pairs: tuple[str, ...], params_json: str | None, hint: str = "--param") -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc.msg} at column {exc.colno}",
                                     param_hint="--params-json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--params-json")
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=hint)
        # A value that parses as JSON (numbers, lists, true) is taken as such; anything else is text.
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


priority_option = click.option("--priority", type=click.Choice(PRIORITY_NAMES), default="normal",
                               show_default=True)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def register() -> None:
    import importlib

    for name in ("actions_cmd", "db_cmd", "demo_cmd", "dlq_cmd", "guards_cmd", "sandbox_cmd", "worker_cmd",
                 "workflow_cmd", "ops_cmd", "flower_cmd"):
        importlib.import_module(f"workers.cli.{name}").register(cli)


def main() -> None:
    register()
    try:
        cli(prog_name="opsq")
    except ConfigError as exc:  # pragma: no cover - raised outside invoke only in odd set-ups
        _die(str(exc))
    finally:
        _close_result_subscriptions()


def _close_result_subscriptions() -> None:
    """Sending a group makes Celery subscribe to its results in Redis; left to interpreter shutdown,
    the unsubscribe fails noisily ("Exception ignored in AsyncResult.__del__"). The CLI follows work in
    the store, never through Celery results, so close them while the interpreter is whole."""
    module = sys.modules.get("workers.celery_app")
    if module is None or not module.app.configured:  # never used: nothing subscribed (and no broker to ask)
        return
    consumer = getattr(module.app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
        getattr(consumer, "subscribed_to", set()).clear()


if __name__ == "__main__":
    main()
