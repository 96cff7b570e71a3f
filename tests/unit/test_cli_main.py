"""workers.cli.main: parsing `key=value` params and `--params-json`."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import click
import pytest

from workers.cli import main
from workers.cli.options import parse_params


def test_cli_params_parse_json_values_and_refuse_bad_pairs():
    assert parse_params(("n=3", "t=hello", "l=[1,2]"), '{"a": true}') == {"a": True, "n": 3, "t": "hello",
                                                                           "l": [1, 2]}
    with pytest.raises(click.BadParameter):
        parse_params(("novalue",), None)
    with pytest.raises(click.BadParameter):
        parse_params((), "[1]")


def test_closing_result_subscriptions_with_redis_gone_is_quiet(monkeypatch):
    # Redis down at exit: Celery's result consumer fails to unsubscribe ("Retry limit exceeded while trying to
    # reconnect to the Celery result store backend"); the command's own error line is all that is printed.
    class Consumer:
        subscribed_to = {"task-id"}

        def stop(self) -> None:
            raise RuntimeError("Retry limit exceeded while trying to reconnect to the Celery result store backend.")

    consumer = Consumer()
    fake = SimpleNamespace(app=SimpleNamespace(configured=True, backend=SimpleNamespace(result_consumer=consumer)))
    monkeypatch.setitem(sys.modules, "workers.celery_app", fake)
    main._close_result_subscriptions()
    assert consumer.subscribed_to == set()
