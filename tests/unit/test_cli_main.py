"""workers.cli.main: parsing `key=value` params and `--params-json`."""

from __future__ import annotations

import click
import pytest

from workers.cli.options import parse_params


def test_cli_params_parse_json_values_and_refuse_bad_pairs():
    assert parse_params(("n=3", "t=hello", "l=[1,2]"), '{"a": true}') == {"a": True, "n": 3, "t": "hello",
                                                                           "l": [1, 2]}
    with pytest.raises(click.BadParameter):
        parse_params(("novalue",), None)
    with pytest.raises(click.BadParameter):
        parse_params((), "[1]")
