"""`opsq actions` (issue 16, item 2): every platform's actions with a description, the params schema and an example,
all read from the executors' params models (the ones submit validates with)."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner

from executors.registry import EXECUTORS, validate_action
from workers.cli.catalog_cmd import python_call, submit_command
from workers.cli.main import cli, register
from workers.cli.options import parse_params

ACTIONS = [(p, a) for p, cls in EXECUTORS.items() for a in cls.actions]


def run(*args: str):
    register()
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(("platform", "action"), ACTIONS)
def test_every_action_has_a_description_and_an_example_that_validates(platform, action):
    doc = EXECUTORS[platform].describe(action)
    assert doc.description and not doc.description.endswith(" "), (platform, action)
    assert doc.example, f"{platform}.{action}: no example (executors.base.example on its params model)"
    validate_action(platform, action, doc.example)
    assert set(doc.required) <= set(doc.example), "the example gives every required param"
    assert doc.schema["examples"] == [doc.example]  # what the JSON schema says is the example


@pytest.mark.parametrize(("platform", "action"), ACTIONS)
def test_the_command_line_and_the_python_call_carry_the_example_exactly(platform, action):
    example = EXECUTORS[platform].describe(action).example
    words = shlex.split(submit_command(platform, action, example))
    assert words[:4] == ["opsq", "submit", platform, action]
    pairs = tuple(words[i + 1] for i, w in enumerate(words) if w == "-p")
    given = words[words.index("--params-json") + 1] if "--params-json" in words else None
    assert parse_params(pairs, given) == example
    call = python_call(platform, action, example)
    assert eval(call, {"submit_action": lambda *a: a}) == (platform, action, example)


def test_a_text_that_reads_as_json_goes_as_params_json():
    line = submit_command("noop", "noop", {"echo": "5", "other": "x y"})
    assert "--params-json" in line and " -p " not in line
    assert json.loads(shlex.split(line)[-1]) == {"echo": "5", "other": "x y"}


def test_the_listing_names_every_action_once_with_its_required_params():
    out = run("actions")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    for platform, action in ACTIONS:
        (line,) = [ln for ln in lines if ln.split()[:2] == [platform, action]]
        doc = EXECUTORS[platform].describe(action)
        assert doc.description in line and ", ".join(doc.required or ["-"]) in line
    assert "opsq actions PLATFORM ACTION" in out.output
    listed = json.loads(run("actions", "--json").output)
    assert [(d["platform"], d["action"]) for d in listed] == ACTIONS
    assert all(d["submit"].startswith(f"opsq submit {d['platform']} {d['action']}") for d in listed)
    only = json.loads(run("actions", "trello", "--json").output)
    assert [d["action"] for d in only] == list(EXECUTORS["trello"].actions)


def test_one_action_shows_types_defaults_the_example_and_the_schema():
    out = run("actions", "slack", "send_message")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("slack send_message: Post a message")
    rows = {ln.split()[0]: ln for ln in out.output.splitlines() if ln.split()}
    assert "required" in rows["channel"] and "string" in rows["channel"] and "min length 1" in rows["channel"]
    assert "optional" in rows["thread_ts"] and "string | null" in rows["thread_ts"] and "null" in rows["thread_ts"]
    assert "opsq submit slack send_message -p 'channel=#ops' -p 'text=deploy done'" in out.output
    assert 'submit_action("slack", "send_message", {"channel": "#ops", "text": "deploy done"})' in out.output
    assert '"additionalProperties": false' in out.output  # the JSON schema itself
    shown = json.loads(run("actions", "slack", "send_message", "--json").output)
    assert shown["schema"] == EXECUTORS["slack"].actions["send_message"].model_json_schema(by_alias=True)
    assert shown["required"] == ["channel", "text"] and shown["example"] == {"channel": "#ops", "text": "deploy done"}
    # An alias is what is submitted (webhook's `json`), so it is what the schema names.
    webhook = json.loads(run("actions", "webhook", "post", "--json").output)
    assert "json" in webhook["schema"]["properties"] and "json_body" not in webhook["schema"]["properties"]


@pytest.mark.parametrize(("args", "names"), [
    (("nosuch",), ["unknown platform 'nosuch'", "slack", "noop"]),
    (("slack", "nosuch"), ["unknown action slack.nosuch", "send_message", "request_approval"]),
    (("nosuch", "send_message"), ["unknown platform 'nosuch'", "gsheets"]),
])
def test_an_unknown_platform_or_action_is_one_line_listing_what_exists(args, names):
    out = run("actions", *args)
    assert out.exit_code == 3
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.output
    assert all(name in lines[0] for name in names), lines[0]


def test_submit_help_points_to_opsq_actions():
    out = run("submit", "--help")
    assert "opsq actions PLATFORM ACTION" in out.output and "`opsq actions`" in out.output
